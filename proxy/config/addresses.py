"""config.core.v3.Address as (host, port)."""
from __future__ import annotations

import ipaddress

from proxy.config.errors import ConfigError, join


def socket_address(address: dict, path: str, need_ip: bool) -> tuple[str, int]:
    """(host, port) of a validated Address at `path`. Envoy binds listeners and admin, and
    connects STATIC endpoints, to IP literals only; DNS clusters may name hosts."""
    sa, spath = address["socket_address"], join(path, "socket_address")
    host = sa["address"]
    if need_ip:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(join(spath, "address"), f"{host!r} is not an IP address") from None
    return host, sa["port_value"] or 0
