"""config.core.v3.DataSource: bytes given inline or read from a file or variable at load time."""
from __future__ import annotations

import os

from proxy.config.errors import ConfigError, join


def read(source: dict, path: str) -> bytes:
    """The bytes of a validated DataSource at `path`. Relative file names are relative to the
    working directory, as in Envoy."""
    if source["filename"] is not None:
        try:
            with open(source["filename"], "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(join(path, "filename"),
                              f"cannot read {source['filename']!r}: {e.strerror}") from None
    if source["inline_bytes"] is not None:
        return source["inline_bytes"]
    if source["inline_string"] is not None:
        return source["inline_string"].encode()
    name = source["environment_variable"]
    if name not in os.environ:
        raise ConfigError(join(path, "environment_variable"),
                          f"environment variable {name!r} is not set")
    return os.environ[name].encode()
