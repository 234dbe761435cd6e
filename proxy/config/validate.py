"""Walks a parsed YAML/JSON document against the schema tables.

Returns the document normalised for the builders: snake_case keys (Envoy also accepts the proto3
JSON camelCase names), durations as float seconds, wrapper values unwrapped, Percent as a float,
bytes decoded, and every field of every message present: absent fields get the schema default,
or None / [] when there is none. Refused fields are left out.

The first problem found, in document order, raises ConfigError with its path.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import re
from typing import Any

from proxy.config import extensions
from proxy.config.durations import DurationError, format_duration, parse_duration
from proxy.config.errors import ConfigError, index, join
from proxy.config.kinds import (
    NO_DEFAULT, AnyMsg, Bool, Bytes, Double, Duration, Enum, Field, Int, List, Message, Msg,
    Percent, Str, Struct, TypedConfig, TypedConfigMap,
)
from proxy.config.schema import MESSAGES

# RFC 9110 token characters; Envoy's well_known_regex HTTP_HEADER_NAME also allows a leading ':'
# for pseudo-headers such as ":authority" in matchers.
_HEADER_NAME = re.compile(r"^:?[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00\r\n]")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])([A-Z])")


def validate(document: Any, message: str = "Bootstrap") -> dict:
    """The normalised form of `document`, which must be an Envoy `message`."""
    return _message(document, MESSAGES[message], "")


def describe(value: Any) -> str:
    """A short description of a YAML/JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def snake_case(name: str) -> str:
    """proto3 JSON name -> field name: "connectTimeout" -> "connect_timeout"."""
    return _CAMEL_HUMP.sub(r"_\1", name).lower()


# --- messages ----------------------------------------------------------------------------------

def _field_name(key: Any, message: Message, path: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(join(path, str(key)), "field names must be strings")
    if key in message.fields:
        return key
    snake = snake_case(key)
    if snake in message.fields:
        return snake
    reason = "unknown field"
    close = difflib.get_close_matches(snake, list(message.fields), n=1, cutoff=0.75)
    if close:
        reason += f"; did you mean {close[0]!r}?"
    raise ConfigError(join(path, key), reason)


def _message(raw: Any, message: Message, path: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping ({message.proto}), got {describe(raw)}")
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}        # field name -> key as written
    oneofs_set: dict[str, str] = {}     # oneof -> the member that is set
    for key, value in raw.items():
        name = _field_name(key, message, path)
        fpath = join(path, key)
        if name in spelled:
            raise ConfigError(fpath, f"field given twice (as {spelled[name]!r} and {key!r})")
        spelled[name] = key
        field = message.fields[name]
        if value is None:               # proto3 JSON: null means "not set"
            continue
        if field.refused:
            _check_refused(value, field, fpath)
            continue
        if field.oneof:
            other = oneofs_set.setdefault(field.oneof, name)
            if other != name:
                members = ", ".join(repr(m) for m in message.oneof_members(field.oneof, True))
                raise ConfigError(path, f"{other!r} and {name!r} cannot both be set "
                                        f"(only one of {members})")
        if isinstance(field.kind, TypedConfig):
            out[name] = _typed_config(field.kind, raw.get("name"), value, path)
        else:
            out[name] = _value(value, field.kind, fpath)

    for name, field in message.fields.items():
        if name in out or field.refused:
            continue
        if field.required:
            raise ConfigError(join(path, name), "missing required field")
        if isinstance(field.kind, TypedConfig):
            # No typed_config: Envoy finds the extension by name and uses its defaults.
            out[name] = _typed_config(field.kind, raw.get("name"), None, path)
        elif field.oneof and field.oneof in oneofs_set:
            out[name] = None            # another member of its oneof is set
        else:
            out[name] = _absent(field)

    for oneof in message.required_oneofs:
        if oneof not in oneofs_set:
            members = message.oneof_members(oneof, supported_only=True)
            if len(members) == 1:       # the others are refused: name the one to write
                raise ConfigError(join(path, members[0]), "missing required field")
            listing = ", ".join(repr(m) for m in members)
            raise ConfigError(path, f"exactly one of {listing} is required")
    return out


def _absent(field: Field) -> Any:
    if field.default is not NO_DEFAULT:
        return field.default
    if isinstance(field.kind, List):
        return []
    return None


def _check_refused(value: Any, field: Field, path: str) -> None:
    if field.kind is not None and field.harmless:
        if _value(value, field.kind, path) in field.harmless:
            return
    raise ConfigError(path, f"not supported by cyvoy ({field.refused})")


def _typed_config(kind: TypedConfig, name: Any, raw: Any, path: str) -> dict:
    """{"extension": canonical name, "config": validated message} of an extension pair whose
    wrapper is at `path`."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(join(path, "typed_config"), f"expected a mapping, got {describe(raw)}")
    extension, message = extensions.resolve(kind.category, name, raw, path)
    body = {k: v for k, v in (raw or {}).items() if k != "@type"}
    config = _message(body, MESSAGES[message], join(path, "typed_config"))
    return {"extension": extension, "config": config}


# --- values ------------------------------------------------------------------------------------

def _value(raw: Any, kind: Any, path: str) -> Any:
    match kind:
        case Msg(name=name):
            return _message(raw, MESSAGES[name], path)
        case List():
            return _list(raw, kind, path)
        case Str():
            return _string(raw, kind, path)
        case Int():
            return _integer(raw, kind, path)
        case Bool():
            if not isinstance(raw, bool):
                raise ConfigError(path, f"expected true or false, got {describe(raw)}")
            return raw
        case Double():
            return _double(raw, kind, path)
        case Duration():
            return _duration(raw, kind, path)
        case Enum():
            return _enum(raw, kind, path)
        case Percent():
            return _percent(raw, path)
        case Bytes():
            return _bytes(raw, path)
        case Struct():
            return raw
        case TypedConfigMap(category=category):
            if not isinstance(raw, dict):
                raise ConfigError(path, f"expected a mapping of filter names, got {describe(raw)}")
            return {name: _typed_config(TypedConfig(category), name, value, join(path, str(name)))
                    for name, value in raw.items()}
        case AnyMsg():
            if not isinstance(raw, dict) or not isinstance(raw.get("@type"), str):
                raise ConfigError(path, "expected a mapping with an '@type'")
            return raw
    raise AssertionError(f"schema kind {kind!r} at {path} has no validator")


def _list(raw: Any, kind: List, path: str) -> list:
    if not isinstance(raw, list):
        raise ConfigError(path, f"expected a list, got {describe(raw)}")
    if len(raw) < kind.min_items:
        raise ConfigError(path, f"needs at least {kind.min_items} "
                                f"entr{'y' if kind.min_items == 1 else 'ies'}")
    if kind.max_items is not None and len(raw) > kind.max_items:
        raise ConfigError(path, f"at most {kind.max_items} entries are allowed")
    return [_value(item, kind.item, index(path, i)) for i, item in enumerate(raw)]


def _string(raw: Any, kind: Str, path: str) -> str:
    if not isinstance(raw, str):
        # YAML turns unquoted 80 or true into numbers/booleans; Envoy wants strings here.
        raise ConfigError(path, f"expected a string, got {describe(raw)} (quote it)")
    if len(raw) < kind.min_len:
        raise ConfigError(path, "must not be empty")
    if kind.max_len is not None and len(raw) > kind.max_len:
        raise ConfigError(path, f"longer than {kind.max_len} characters")
    if kind.well_known == "header_name" and not _HEADER_NAME.match(raw):
        raise ConfigError(path, f"invalid header name {raw!r}")
    if kind.well_known == "header_value" and _HEADER_VALUE_BAD.search(raw):
        raise ConfigError(path, f"{raw!r} contains a NUL, CR or LF character")
    return raw


def _integer(raw: Any, kind: Int, path: str) -> int:
    value = raw
    # proto3 JSON accepts integers written as strings, and integral floats.
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        value = int(raw)
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(path, f"expected an integer ({kind.type_name}), got {describe(raw)}")
    if value < kind.lo:
        raise ConfigError(path, f"{value} is out of range: must be at least {kind.lo}")
    if value > kind.hi:
        raise ConfigError(path, f"{value} is out of range: must be at most {kind.hi}")
    return value


def _double(raw: Any, kind: Double, path: str) -> float:
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        raise ConfigError(path, f"expected a number, got {describe(raw)}")
    value = float(raw)
    if kind.lo is not None and value < kind.lo:
        raise ConfigError(path, f"{raw} is out of range: must be at least {kind.lo}")
    if kind.hi is not None and value > kind.hi:
        raise ConfigError(path, f"{raw} is out of range: must be at most {kind.hi}")
    return value


def _duration(raw: Any, kind: Duration, path: str) -> float:
    try:
        seconds = parse_duration(raw)
    except DurationError as e:
        raise ConfigError(path, str(e)) from None
    if kind.gt is not None and seconds <= kind.gt:
        raise ConfigError(path, f"must be greater than {format_duration(kind.gt)}")
    return seconds


def _enum(raw: Any, kind: Enum, path: str) -> str:
    if not isinstance(raw, str) or raw not in kind.values:
        reason = f"invalid value {raw!r}; expected one of {', '.join(kind.values)}"
        if isinstance(raw, str):
            close = difflib.get_close_matches(raw.upper(), kind.values, n=1, cutoff=0.6)
            if close:
                reason += f"; did you mean {close[0]!r}?"
        raise ConfigError(path, reason)
    if raw in kind.refused:
        raise ConfigError(path, f"not supported by cyvoy ({raw}: {kind.refused[raw]})")
    return raw


def _percent(raw: Any, path: str) -> float:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping like {{value: 50}}, got {describe(raw)}")
    for key in raw:
        if key != "value":
            raise ConfigError(join(path, str(key)), "unknown field; a Percent has only 'value'")
    value = _double(raw.get("value", 0.0), Double(0.0, 100.0), join(path, "value"))
    return value


def _bytes(raw: Any, path: str) -> bytes:
    if not isinstance(raw, str):
        raise ConfigError(path, f"expected base64 text, got {describe(raw)}")
    # proto3 JSON accepts standard or URL-safe base64, with or without padding.
    text = raw.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(path, "invalid base64") from None
