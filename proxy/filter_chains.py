"""Envoy's filter chain match by server name: a listener with several filter_chains picks one per
connection by the TLS client's SNI (filter_chain_match.server_names).

The listener's socket serves TLS with its first chain's context; the SNI callback switches the
handshake to the chosen chain's context (its certificate), and once the handshake is done
`ChainSelect` hands the connection to a Downstream of that chain's connection manager. Listeners
with one chain do not use this module.
"""
from __future__ import annotations

import ssl

from proxy.connection_manager import Downstream


class SniSelector:
    """Envoy's order (listener_components.proto, server_names): the exact name, then wildcard
    names from the longest suffix ("www.example.com": "*.example.com", then "*.com"), then the
    chain with no server_names, then default_filter_chain; no match closes the connection."""

    def __init__(self, entries: list):
        """entries: (model.FilterChain, ssl.SSLContext, Hcm) for each chain, in config order."""
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        self.catch_all = None
        self.default = None
        self.hcm_of: dict[int, object] = {}
        for chain, ctx, hcm in entries:
            self.hcm_of[id(ctx)] = hcm
            if chain.is_default:
                self.default = ctx
            elif not chain.server_names:
                self.catch_all = ctx
            for name in chain.server_names:
                name = name.lower()
                if name.startswith("*."):
                    self.wildcard[name[1:]] = ctx      # ".example.com"
                else:
                    self.exact[name] = ctx

    def pick(self, server_name: str | None):
        if server_name:
            name = server_name.lower()
            ctx = self.exact.get(name)
            if ctx is not None:
                return ctx
            dot = name.find(".")
            while dot >= 0:
                ctx = self.wildcard.get(name[dot:])
                if ctx is not None:
                    return ctx
                dot = name.find(".", dot + 1)
        return self.catch_all if self.catch_all is not None else self.default

    def sni_callback(self, ssl_object, server_name, ctx):
        chosen = self.pick(server_name)
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME    # no filter chain: Envoy closes too
        if chosen is not ctx:
            ssl_object.context = chosen
        return None


class ChainSelect:
    """The protocol of a multi-chain listener until its TLS handshake is done."""
    __slots__ = ("w", "selector")

    def __init__(self, worker, selector: SniSelector):
        self.w = worker
        self.selector = selector

    def connection_made(self, transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        hcm = self.selector.hcm_of.get(id(ssl_object.context)) if ssl_object is not None else None
        if hcm is None:
            transport.abort()
            return
        ds = Downstream(self.w, hcm)
        transport.set_protocol(ds)
        ds.connection_made(transport)

    def connection_lost(self, exc) -> None:
        pass

    def data_received(self, data) -> None:   # never: the protocol is switched at connection_made
        pass

    def eof_received(self):
        return False

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass
