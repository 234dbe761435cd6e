"""Text to a plain document (dicts, lists, scalars), in the format Envoy would read it as."""
from __future__ import annotations

import json
import os
from typing import Any

import yaml

from proxy.config.errors import ConfigError

# Envoy picks the parser by file extension and treats anything else as YAML.
_BY_EXTENSION = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
_PROTO_EXTENSIONS = (".pb", ".pb_text")

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one silently."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict:
    # Only a mapping's own keys can clash; keys pulled in by a "<<" merge may be overridden.
    own = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _key(loader, key_node)
        if key in own:
            raise ConfigError(f"line {key_node.start_mark.line + 1}", f"duplicate key {key!r}")
        own.add(key)
    loader.flatten_mapping(node)
    return {_key(loader, k): loader.construct_object(v, deep=True) for k, v in node.value}


def _key(loader: _Loader, key_node: yaml.Node) -> Any:
    key = loader.construct_object(key_node, deep=True)
    try:
        hash(key)
    except TypeError:
        raise ConfigError(f"line {key_node.start_mark.line + 1}",
                          "a mapping key must be a scalar") from None
    return key


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext in _PROTO_EXTENSIONS:
        raise ConfigError(path, "protobuf binary/text configs are not supported; use YAML or "
                                "JSON")
    return _BY_EXTENSION.get(ext, "yaml")


def parse_text(text: str, fmt: str = "yaml") -> Any:
    if fmt == "json":
        return _parse_json(text)
    if fmt != "yaml":
        raise ValueError(f"unknown config format {fmt!r}; expected 'yaml' or 'json'")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        what = "; ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError(where, f"invalid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError("(document)", f"invalid YAML: {e}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError("(document)", f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"line {e.lineno}, column {e.colno}", f"invalid JSON: {e.msg}") from None


def read_file(path: "str | os.PathLike") -> Any:
    fmt = format_of(str(path))
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(str(path), f"cannot read the configuration: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "the configuration is not UTF-8 text") from None
    return parse_text(text, fmt)
