"""GET /certs: admin.v3.Certificates for the listeners' TLS certificates.

Each certificate chain's first certificate is decoded with the standard library's certificate
decoder (the one `ssl` uses for getpeercert); a certificate it can't decode is listed with its
path only. `path` is the configured filename, or "<inline>" as Envoy prints for inline data.
"""
from __future__ import annotations

import datetime as _dt
import os
import ssl
import tempfile


def _decode(pem: bytes) -> dict | None:
    decoder = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decoder is None:
        return None
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return decoder(path)
    except Exception:
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def _time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), _dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _rfc3339(t: _dt.datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def _cert_paths(source: dict, index: int, chain: int = 0, default: bool = False) -> list[str]:
    """Configured certificate_chain filenames of listener `index`'s filter chain `chain` (or its
    default_filter_chain), in order (best effort)."""
    try:
        lst = (source.get("static_resources") or {}).get("listeners")[index]
        listener = lst["default_filter_chain"] if default else lst["filter_chains"][chain]
    except (AttributeError, IndexError, KeyError, TypeError):
        return []
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("tls_certificates", "tlsCertificates") and isinstance(v, list):
                    for c in v:
                        chain = (c or {}).get("certificate_chain") or (c or {}).get("certificateChain") or {}
                        out.append(chain.get("filename") or "<inline>")
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(listener)
    return out


def details(pem: bytes, path: str, now: _dt.datetime | None = None) -> dict:
    d: dict = {"path": path}
    info = _decode(pem)
    if not info:
        return d
    now = now or _dt.datetime.now(_dt.timezone.utc)
    serial = info.get("serialNumber")
    if serial:
        d["serial_number"] = serial.lower()
    sans = []
    for kind, value in info.get("subjectAltName", ()):
        key = {"DNS": "dns", "URI": "uri", "IP Address": "ip_address"}.get(kind)
        if key:
            sans.append({key: value.strip()})
    d["subject_alt_names"] = sans
    not_before = _time(info.get("notBefore"))
    not_after = _time(info.get("notAfter"))
    if not_after:
        d["days_until_expiration"] = str(max(0, (not_after - now).days))
        d["expiration_time"] = _rfc3339(not_after)
    if not_before:
        d["valid_from"] = _rfc3339(not_before)
    return d


def certificates(bootstrap) -> list[dict]:
    out = []
    for li, listener in enumerate(bootstrap.listeners):
        for k, chain in enumerate(listener.chains or [listener]):
            if chain.tls is None:
                continue
            paths = _cert_paths(bootstrap.source or {}, li, k, getattr(chain, "is_default", False))
            for ci, cert in enumerate(chain.tls.certificates):
                path = paths[ci] if ci < len(paths) else "<inline>"
                out.append({"ca_cert": [], "cert_chain": [details(cert.certificate_chain, path)]})
    return out
