"""layered_runtime: static layers flattened into one {dotted key: value} map.

Envoy's runtime is a set of overridable knobs; cyvoy has no runtime overrides and interprets only
the per-listener connection limit. Every other key is kept (for /runtime) with a warning that it
has no effect, so nothing is dropped silently.
"""
from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Optional

from proxy.config.errors import ConfigError, index, join

CONNECTION_LIMIT = re.compile(r"^envoy\.resource_limits\.listener\.([^.]+)\.connection_limit$")
INTERPRETED = "envoy.resource_limits.listener.<listener name>.connection_limit"


def build_runtime(layered: Optional[dict], path: str, listener_names: Collection[str],
                  fraction_keys: Collection[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """(runtime, warnings). Later layers override earlier ones, as in Envoy."""
    runtime: dict[str, Any] = {}
    if layered is None:
        return runtime, []
    for i, layer in enumerate(layered["layers"]):
        if not isinstance(layer["static_layer"], dict):
            raise ConfigError(join(index(join(path, "layers"), i), "static_layer"),
                              "a static_layer must be a mapping of runtime keys")
        _flatten(layer["static_layer"], "", runtime)

    warnings, ignored = [], []
    for key, value in runtime.items():
        m = CONNECTION_LIMIT.match(key)
        if key in fraction_keys:
            # a route's runtime_fraction reads it: an integer percent
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ConfigError(join(path, key), "a runtime_fraction key must be a percent from 0 to 100, "
                                                   f"got {value!r}")
        elif m is None:
            ignored.append(key)
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(join(path, key), "a connection limit must be a non-negative "
                                               f"integer, got {value!r}")
        elif m.group(1) not in listener_names:
            warnings.append(f"layered_runtime: {key} has no effect: there is no listener named "
                            f"{m.group(1)!r} (listeners: {', '.join(listener_names) or 'none'})")
    if ignored:
        warnings.append(f"layered_runtime: cyvoy interprets only {INTERPRETED}; these runtime "
                        f"keys have no effect: {', '.join(sorted(ignored))}")
    return runtime, warnings


def _flatten(tree: dict, prefix: str, out: dict[str, Any]) -> None:
    # {"a": {"b": 1}} and {"a.b": 1} are the same key in Envoy's runtime.
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _flatten(value, dotted + ".", out)
        else:
            out[dotted] = value
