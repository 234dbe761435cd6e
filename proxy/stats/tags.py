"""Envoy's default tag extraction, for the Prometheus exposition.

Envoy turns a flat stat name into a tag-extracted name plus tags with an ordered list of regexes
(source/common/config/well_known_names.cc). Each regex is searched in the *original* name; its
first group is the text to remove from the name, its second group (or the first when there is
only one) the tag value. The removed ranges of every matching extractor are cut out of the name
together, and each tag name is produced at most once (the first extractor that matches wins).

cyvoy only emits stats under `cluster.`, `http.`, `listener.`, `server.`, `cluster_manager.` and
`listener_manager.`, so only the extractors that can match those are listed (response codes,
cluster name, connection-manager prefix, listener address), in Envoy's order. The `[:digit:]`
classes of Envoy's std::regex patterns are written `0-9` here; Python's `re` alternation is
ordered like ECMAScript's, so the patterns behave the same.

    cluster.backend.upstream_rq_2xx
      -> name "cluster.upstream_rq_xx",
         tags [("envoy.response_code_class", "2"), ("envoy.cluster_name", "backend")]
    -> Prometheus: envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="backend"}
"""
from __future__ import annotations

import re
from functools import lru_cache

# (tag name, compiled regex, substring that must be present (cheap pre-check) or "", fullmatch)
_EXTRACTORS: list[tuple[str, re.Pattern, str, bool]] = [
    # *_rq(_<response_code>)
    ("envoy.response_code", re.compile(r"_rq(_(\d{3}))$"), "_rq_", False),
    # *_rq_(<response_code_class>)xx
    ("envoy.response_code_class", re.compile(r"_rq_(\d)xx$"), "_rq_", False),
    # cluster.(<cluster_name>.)*   (RE2 full match in Envoy: the name stops at the first dot)
    ("envoy.cluster_name", re.compile(r"^cluster\.(([^.]+)\.).*", re.S), "", True),
    # listener.[<address>.]http.(<stat_prefix>.)*
    ("envoy.http_conn_manager_prefix", re.compile(r"^listener(?=\.).*?\.http\.((.*?)\.)", re.S),
     ".http.", False),
    # http.(<stat_prefix>.)*
    ("envoy.http_conn_manager_prefix", re.compile(r"^http\.((.*?)\.)", re.S), "", False),
    # listener.(<address>.)*
    ("envoy.listener_address",
     re.compile(r"^listener\.(((?:[_.0-9]*|[_\[\]aAbBcCdDeEfF0-9]*))\.)"), "", False),
]

_NON_PROM = re.compile(r"[^a-zA-Z0-9_]")


@lru_cache(maxsize=65536)
def extract_tags(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(tag-extracted name, ((tag name, value), ...)) for an Envoy stat name."""
    tags: list[tuple[str, str]] = []
    seen: set[str] = set()
    remove: list[tuple[int, int]] = []
    for tag, rx, substr, full in _EXTRACTORS:
        if tag in seen or (substr and substr not in name):
            continue
        m = rx.fullmatch(name) if full else rx.search(name)
        if m is None or not m.group(1):
            continue
        value = m.group(2) if rx.groups >= 2 and m.group(2) is not None else m.group(1)
        tags.append((tag, value))
        seen.add(tag)
        remove.append(m.span(1))
    if not remove:
        return name, ()
    keep = bytearray(b"\x01") * len(name)
    for a, b in remove:
        keep[a:b] = b"\x00" * (b - a)
    out = "".join(ch for ch, k in zip(name, keep) if k)
    return out, tuple(tags)


def sanitize(name: str) -> str:
    """Envoy's Prometheus name sanitizing: every character outside [a-zA-Z0-9_] becomes '_'."""
    return _NON_PROM.sub("_", name)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@lru_cache(maxsize=65536)
def prometheus_name(name: str) -> tuple[str, str]:
    """(metric family name, label text without braces) for an Envoy stat name, e.g.
    ("envoy_cluster_upstream_rq_total", 'envoy_cluster_name="backend"')."""
    base, tags = extract_tags(name)
    labels = ",".join(f'{sanitize(k)}="{escape_label_value(v)}"' for k, v in tags)
    return "envoy_" + sanitize(base), labels
