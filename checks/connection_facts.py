"""Facts about a connection that blackbox_exporter exports for every prober that makes one.

Shared by the checks that connect (http, tcp, tls, smtp), so that the series dashboards
built for blackbox read (``probe_ip_protocol``, ``probe_ip_addr_hash``,
``probe_tls_version_info``, ``probe_ssl_last_chain_info``,
``probe_ssl_last_chain_expiry_timestamp_seconds``) mean the same whichever check made them.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

_ENCODING_DER = 2  # _ssl.ENCODING_DER, for the private chain API of Python < 3.13
_FNV_OFFSET, _FNV_PRIME = 0x811C9DC5, 0x01000193

METRIC_HELP = {
    "ip_protocol": "Whether the probe connected over IPv4 (4) or IPv6 (6)",
    "ip_addr_hash": "Hash of the IP address the probe connected to: it changes when the "
    "address does",
    "ssl_last_chain_expiry_timestamp_seconds": "Earliest notAfter (unix seconds) in the "
    "verified chain",
    "ssl_earliest_cert_expiry": "Earliest notAfter (unix seconds) of the certificates sent",
    "dns_lookup_time_seconds": "Time the probe spent resolving the target's name, in seconds",
}


def address_facts(peername: Any) -> dict[str, float]:
    """``probe_ip_protocol`` and ``probe_ip_addr_hash`` (blackbox's FNV-1a of the address
    text) for a socket's peer name; nothing when it is unknown."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return {}
    try:
        address = ipaddress.ip_address(peername[0].partition("%")[0])
    except ValueError:
        return {}
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return {"ip_protocol": float(address.version), "ip_addr_hash": float(fnv1a(str(address)))}


def fnv1a(text: str) -> int:
    """32-bit FNV-1a, blackbox's hash of the address."""
    value = _FNV_OFFSET
    for byte in text.encode():
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def tls_version_label(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """``TLS 1.3`` for OpenSSL's ``TLSv1.3``: blackbox's spelling (Go's)."""
    version = ssl_object.version() or ""
    return version.replace("TLSv", "TLS ") if version.startswith("TLSv") else version


def chain(ssl_object: ssl.SSLObject, verified: bool) -> list[bytes]:
    """The peer chain as DER, leaf first: public API from Python 3.13, private before."""
    name = "get_verified_chain" if verified else "get_unverified_chain"
    public = getattr(ssl_object, name, None)
    if public is not None:
        return [bytes(der) for der in public() or []]
    private = getattr(getattr(ssl_object, "_sslobj", None), name, None)
    if private is None:
        return []
    return [bytes(cert.public_bytes(_ENCODING_DER)) for cert in private() or []]


def leaf_info(cert: x509.Certificate) -> dict[str, str]:
    """``probe_ssl_last_chain_info``'s labels for the leaf certificate, as blackbox names them."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(name) for name in alt.get_values_for_type(x509.DNSName)]
        names += [str(address) for address in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return {
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "subjectalternative": ",".join(names),
        "serialnumber": format(cert.serial_number, "x"),
    }


def tls_facts(
    ssl_object: ssl.SSLObject, verified: bool
) -> tuple[dict[str, float], dict[str, dict[str, str]]]:
    """Facts and info series of a completed handshake: the certificates' expiries, the
    leaf's labels and the TLS version (what blackbox's http and tcp probers export)."""
    facts: dict[str, float] = {}
    info = {"tls_version_info": {"version": tls_version_label(ssl_object)}}
    sent = [x509.load_der_x509_certificate(der) for der in chain(ssl_object, False)]
    if not sent and (leaf := ssl_object.getpeercert(binary_form=True)):
        sent = [x509.load_der_x509_certificate(leaf)]
    if sent:
        facts["ssl_earliest_cert_expiry"] = min(c.not_valid_after_utc.timestamp() for c in sent)
    relied_on = [x509.load_der_x509_certificate(der) for der in chain(ssl_object, True)]
    if verified and relied_on:
        facts["ssl_last_chain_expiry_timestamp_seconds"] = min(
            c.not_valid_after_utc.timestamp() for c in relied_on
        )
    leaf_of_chain = relied_on[0] if verified and relied_on else (sent[0] if sent else None)
    if leaf_of_chain is not None:
        info["ssl_last_chain_info"] = leaf_info(leaf_of_chain)
    return facts, info
