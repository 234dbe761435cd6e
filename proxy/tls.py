"""SSL contexts from the config's TLS contexts: a listener's (DownstreamTlsContext, server side)
and a cluster's (UpstreamTlsContext, client side, used by the workers' connections and by the
health checks, as Envoy's health checks use the cluster's transport socket)."""
from __future__ import annotations

import ssl
import tempfile

from proxy.config.model import DownstreamTls, UpstreamTls

_TLS_VERSIONS = {"TLSv1_0": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
                 "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}


def _params(ctx: ssl.SSLContext, tls) -> None:
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    if tls.cipher_suites:
        ctx.set_ciphers(":".join(tls.cipher_suites))   # TLS 1.2 and below; 1.3 suites are fixed


def _load_certificates(ctx: ssl.SSLContext, certificates) -> None:
    for cert in certificates:
        # ssl wants files; the PEM may have come inline from the config
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as cf, \
                tempfile.NamedTemporaryFile("wb", suffix=".pem") as kf:
            cf.write(cert.certificate_chain)
            cf.flush()
            kf.write(cert.private_key)
            kf.flush()
            ctx.load_cert_chain(cf.name, kf.name)


# server contexts made by the master before it forks its workers (prepare_server_contexts)
_prepared: dict[int, ssl.SSLContext] = {}


def prepare_server_contexts(bootstrap) -> None:
    """Every TLS filter chain's context, made once in the master: the workers it forks inherit
    them with the same session ticket keys (OpenSSL makes them with the context), so a session
    resumes whichever worker's SO_REUSEPORT socket the client lands on."""
    made = {id(chain.tls): _server_context(chain.tls)
            for lc in bootstrap.listeners for chain in lc.chains if chain.tls is not None}
    _prepared.clear()      # only once all of them loaded: a failed reload keeps the old ones
    _prepared.update(made)


def server_context(tls: DownstreamTls) -> ssl.SSLContext:
    ctx = _prepared.get(id(tls))
    return ctx if ctx is not None else _server_context(tls)


def _server_context(tls: DownstreamTls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _params(ctx, tls)
    _load_certificates(ctx, tls.certificates)
    if tls.client_ca is not None:
        # Envoy: with a trusted_ca a client certificate is asked for and verified when sent;
        # require_client_certificate refuses the handshake without one
        ctx.load_verify_locations(cadata=tls.client_ca.decode("ascii", "replace"))
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    if tls.alpn_protocols:
        ctx.set_alpn_protocols(tls.alpn_protocols)
    if tls.disable_stateless_session_resumption:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def client_context(tls: UpstreamTls, alpn=None) -> tuple[ssl.SSLContext, str]:
    """(context, server_hostname). As Envoy: with trusted_ca the server's chain must verify; its
    names are not matched against the SNI (Envoy needs match_typed_subject_alt_names for that);
    without trusted_ca nothing is verified. server_hostname "" sends no SNI."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if tls.trusted_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=tls.trusted_ca.decode("ascii", "replace"))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    _params(ctx, tls)
    _load_certificates(ctx, tls.certificates)
    # the protocol the cluster speaks; an HTTP/2 cluster offers "h2" alone
    ctx.set_alpn_protocols(alpn or ["http/1.1"])
    return ctx, tls.sni
