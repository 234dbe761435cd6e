"""GET /config_dump: the configuration as it was read (bootstrap.source), secrets redacted.

Shape (admin.v3.ConfigDump):

    {"configs": [
      {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {...}},
      {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
       "static_clusters": [{"cluster": {"@type": ".../envoy.config.cluster.v3.Cluster", ...}}]},
      {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
       "static_listeners": [{"listener": {"@type": ".../envoy.config.listener.v3.Listener", ...}}]}
    ]}

Redaction (Envoy redacts TlsCertificate private_key and password before dumping): every value
under a key named private_key, password, session_ticket_keys, hmac_secret, token_secret,
client_secret or secret (a generic secret) becomes "[redacted]", except a `filename` or
`environment_variable` (where the secret lives, not the secret); and under any TLS certificate
(tls_certificates / tls_certificate) every inline_string / inline_bytes is "[redacted]" too.
Keys are compared in snake_case, so camelCase JSON configs (privateKey, inlineString) are covered.
"""
from __future__ import annotations

import copy
import re
from typing import Any

import orjson

REDACTED = "[redacted]"
SECRET_KEYS = frozenset({"private_key", "password", "session_ticket_keys", "hmac_secret",
                         "token_secret", "client_secret", "secret"})
CERT_KEYS = frozenset({"tls_certificates", "tls_certificate"})
INLINE_KEYS = frozenset({"inline_string", "inline_bytes"})
KEEP_IN_SECRET = frozenset({"filename", "environment_variable"})

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(key: str) -> str:
    return _CAMEL.sub(r"_\1", key).lower()


def redact(doc: Any) -> Any:
    """A redacted deep copy of a parsed config document."""
    return _walk(copy.deepcopy(doc), in_secret=False, in_cert=False)


def _walk(node: Any, in_secret: bool, in_cert: bool) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sk = _snake(k) if isinstance(k, str) else k
            if in_secret and sk in KEEP_IN_SECRET:
                out[k] = v
            elif in_cert and sk in INLINE_KEYS:
                out[k] = REDACTED
            else:
                out[k] = _walk(v, in_secret or sk in SECRET_KEYS, in_cert or sk in CERT_KEYS)
        return out
    if isinstance(node, list):
        return [_walk(v, in_secret, in_cert) for v in node]
    if in_secret and node is not None and not isinstance(node, bool):
        return REDACTED
    return node


def _typed(obj: Any, type_url: str) -> Any:
    if isinstance(obj, dict):
        d = {"@type": type_url}
        d.update(obj)
        return d
    return obj


def config_dump(source: dict) -> dict:
    doc = redact(source or {})
    static = doc.get("static_resources") or doc.get("staticResources") or {}
    clusters = static.get("clusters") or []
    listeners = static.get("listeners") or []
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": doc},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "version_info": "",
         "static_clusters": [
             {"cluster": _typed(c, "type.googleapis.com/envoy.config.cluster.v3.Cluster")}
             for c in clusters]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "version_info": "",
         "static_listeners": [
             {"listener": _typed(x, "type.googleapis.com/envoy.config.listener.v3.Listener")}
             for x in listeners]},
    ]}


def render(source: dict) -> bytes:
    return orjson.dumps(config_dump(source), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=str) + b"\n"
