"""TLS contexts of listeners (DownstreamTlsContext) and clusters (UpstreamTlsContext): PEM data
read at load time, versions and cipher suites checked here so a bad one is refused with its path."""
from __future__ import annotations

import ssl

from proxy.config import datasource
from proxy.config.errors import ConfigError, index, join
from proxy.config.model import DownstreamTls, TlsCertificate, UpstreamTls

_VERSION_ORDER = ["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]


def downstream_tls(ctx: dict, path: str) -> DownstreamTls:
    common, cpath = ctx["common_tls_context"], join(path, "common_tls_context")
    certs, tpath = common["tls_certificates"], join(cpath, "tls_certificates")
    if not certs:
        raise ConfigError(tpath, "a TLS listener needs at least one certificate")
    tls = DownstreamTls(certificates=_certificates(certs, tpath),
                        alpn_protocols=_alpn(common, cpath))
    tls.client_ca = _trusted_ca(common, cpath)
    tls.require_client_certificate = ctx["require_client_certificate"]
    tls.disable_stateless_session_resumption = ctx["disable_stateless_session_resumption"]
    if tls.require_client_certificate and tls.client_ca is None:
        raise ConfigError(join(path, "require_client_certificate"),
                          "needs common_tls_context.validation_context.trusted_ca to verify "
                          "the client certificates against")
    _tls_params(tls, common["tls_params"], join(cpath, "tls_params"))
    return tls


def upstream_tls(ctx: dict, path: str) -> UpstreamTls:
    tls = UpstreamTls(sni=ctx["sni"])
    common = ctx["common_tls_context"]
    if common is None:
        return tls
    cpath = join(path, "common_tls_context")
    tls.alpn_protocols = _alpn(common, cpath)
    tls.certificates = _certificates(common["tls_certificates"], join(cpath, "tls_certificates"))
    tls.trusted_ca = _trusted_ca(common, cpath)
    _tls_params(tls, common["tls_params"], join(cpath, "tls_params"))
    return tls


def _trusted_ca(common: dict, cpath: str) -> bytes | None:
    vc = common["validation_context"]
    if vc is None or vc["trusted_ca"] is None:
        return None
    vpath = join(join(cpath, "validation_context"), "trusted_ca")
    ca = datasource.read(vc["trusted_ca"], vpath)
    if b"-----BEGIN CERTIFICATE-----" not in ca:
        raise ConfigError(vpath, "does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return ca


def _certificates(certs: list, tpath: str) -> list[TlsCertificate]:
    out = []
    for i, cert in enumerate(certs):
        cert_path = index(tpath, i)
        chain = datasource.read(cert["certificate_chain"], join(cert_path, "certificate_chain"))
        key = datasource.read(cert["private_key"], join(cert_path, "private_key"))
        if b"-----BEGIN CERTIFICATE-----" not in chain:
            raise ConfigError(join(cert_path, "certificate_chain"),
                              "does not contain a PEM certificate (-----BEGIN CERTIFICATE-----)")
        if b"PRIVATE KEY-----" not in key:
            raise ConfigError(join(cert_path, "private_key"),
                              "does not contain a PEM private key "
                              "(-----BEGIN ... PRIVATE KEY-----)")
        out.append(TlsCertificate(certificate_chain=chain, private_key=key))
    return out


def _alpn(common: dict, cpath: str) -> list[str]:
    """The ALPN protocols, "h2" and "http/1.1". Envoy joins the list with commas and splits it
    again, so one entry may list several ("h2,http/1.1", as many configs write it)."""
    out = []
    for i, entry in enumerate(common["alpn_protocols"]):
        for protocol in entry.split(","):
            protocol = protocol.strip()
            if protocol not in ("h2", "http/1.1"):
                raise ConfigError(index(join(cpath, "alpn_protocols"), i),
                                  f"not supported by cyvoy ({protocol!r}: only 'h2' and "
                                  "'http/1.1' are supported)")
            out.append(protocol)
    return out


def _tls_params(tls, p: dict | None, path: str) -> None:
    """tls_params: versions (TLS_AUTO keeps Envoy's defaults, 1.2 to 1.3) and the TLS 1.2
    cipher list in OpenSSL names."""
    if p is None:
        return
    if p["tls_minimum_protocol_version"] != "TLS_AUTO":
        tls.min_version = p["tls_minimum_protocol_version"]
    if p["tls_maximum_protocol_version"] != "TLS_AUTO":
        tls.max_version = p["tls_maximum_protocol_version"]
    if _VERSION_ORDER.index(tls.min_version) > _VERSION_ORDER.index(tls.max_version):
        raise ConfigError(join(path, "tls_minimum_protocol_version"),
                          f"{tls.min_version} is above the maximum {tls.max_version}")
    for i, suite in enumerate(p["cipher_suites"]):
        if "[" in suite or "|" in suite:
            raise ConfigError(index(join(path, "cipher_suites"), i),
                              "not supported by cyvoy (BoringSSL equal-preference groups); list "
                              "the suites one by one")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(suite)
        except ssl.SSLError:
            raise ConfigError(index(join(path, "cipher_suites"), i),
                              f"unknown cipher suite {suite!r} (OpenSSL names, e.g. "
                              "ECDHE-RSA-AES128-GCM-SHA256)") from None
    tls.cipher_suites = list(p["cipher_suites"])
