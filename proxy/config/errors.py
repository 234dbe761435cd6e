"""The one exception the config package raises."""
from __future__ import annotations


class ConfigError(Exception):
    """A configuration the loader refuses.

    `path` names the offending place in the document the way a user reads it, e.g.
    "static_resources.clusters[0].lb_polcy"; `reason` says what is wrong with it.
    """

    def __init__(self, path: str, reason: str):
        self.path = path or "(document)"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def join(path: str, key: str) -> str:
    """The path of field `key` inside the message at `path`."""
    return f"{path}.{key}" if path else key


def index(path: str, i: int) -> str:
    """The path of element `i` of the list at `path`."""
    return f"{path}[{i}]"
