"""Envoy's safe_regex (Google RE2 syntax) compiled with Python's `re`.

RE2 guarantees linear-time matching, so it has no lookarounds, backreferences, atomic groups,
possessive quantifiers or conditionals; Envoy refuses a config that uses them, and so does cyvoy
rather than run a pattern with different (possibly exponential) behaviour. Spellings that
differ between the engines are translated: \\z (end of text) becomes \\Z, (?<name>...) becomes
(?P<name>...), \\Q...\\E is escaped, and POSIX classes such as [[:alpha:]] are expanded (Python
would otherwise read them as ordinary characters). Perl classes (\\d, \\w, \\s, \\b) are ASCII-only
in RE2, hence re.ASCII.
"""
from __future__ import annotations

import re

# (what to look for at a "(" , what it is)
_GROUP_CONSTRUCTS = (
    ("(?=", "lookahead"), ("(?!", "negative lookahead"), ("(?<=", "lookbehind"),
    ("(?<!", "negative lookbehind"), ("(?>", "atomic group"), ("(?(", "conditional"),
    ("(?P=", "named backreference"), ("(?#", "comment group"),
)
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z",
    "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z",
    "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_COUNTED_REPETITION_END = re.compile(r"\{\d+(?:,\d*)?$")


class RegexError(ValueError):
    pass


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """Python spelling of the escape at pattern[i] (a backslash) and the index after it."""
    nxt = pattern[i + 1]
    if nxt == "Q":                          # \Q...\E quotes literal text
        end = pattern.find("\\E", i + 2)
        end = len(pattern) if end < 0 else end
        return re.escape(pattern[i + 2:end]), end + 2
    if nxt in "pP":
        raise RegexError("Unicode classes (\\p, \\P) are not supported by cyvoy's regex engine")
    if nxt == "Z":
        raise RegexError("\\Z is not supported by RE2 (use \\z or $)")
    if not in_class:
        if nxt in "123456789":
            raise RegexError(f"backreference \\{nxt} is not supported by RE2")
        if nxt in "gk" and pattern[i + 2:i + 3] in ("<", "{"):
            raise RegexError(f"backreference \\{nxt}{pattern[i + 2]} is not supported by RE2")
    return ("\\Z" if nxt == "z" else "\\" + nxt), i + 2


def _posix_class(pattern: str, i: int) -> tuple[str, int]:
    """Expansion of the [:name:] at pattern[i] and the index after it."""
    end = pattern.find(":]", i + 2)
    name = pattern[i + 2:end] if end > 0 else ""
    if name.startswith("^"):
        raise RegexError(f"negated POSIX class [:{name}:] is not supported by cyvoy")
    if name not in _POSIX_CLASSES:
        raise RegexError(f"unknown POSIX class [:{name}:]")
    return _POSIX_CLASSES[name], end + 2


def translate(pattern: str) -> str:
    """The Python spelling of RE2 `pattern`; raises RegexError for what RE2 does not support."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            text, i = _escape(pattern, i, in_class)
            out.append(text)
            continue
        if in_class:
            if pattern.startswith("[:", i):
                text, i = _posix_class(pattern, i)
                out.append(text)
                continue
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            # A "]" right after "[" or "[^" is a literal member, not the end of the class.
            lead = 2 if pattern[i + 1:i + 2] == "^" else 1
            if pattern[i + lead:i + lead + 1] == "]":
                out.append(pattern[i:i + lead + 1])
                i += lead + 1
                continue
        elif c == "(":
            for construct, what in _GROUP_CONSTRUCTS:
                if pattern.startswith(construct, i):
                    raise RegexError(f"{what} '{construct}' is not supported by RE2")
            if pattern.startswith("(?<", i):
                out.append("(?P<")
                i += 3
                continue
        elif pattern[i + 1:i + 2] == "+" and (
                c in "*+?" or (c == "}" and _COUNTED_REPETITION_END.search("".join(out)))):
            raise RegexError(f"possessive quantifier '{c}+' is not supported by RE2")
        out.append(c)
        i += 1
    return "".join(out)


def compile_re2(pattern: str) -> re.Pattern:
    """Compile an RE2 pattern; the caller matches with fullmatch, as Envoy does."""
    try:
        return re.compile(translate(pattern), re.ASCII)
    except re.error as e:
        raise RegexError(f"invalid regex {pattern!r}: {e}") from None
