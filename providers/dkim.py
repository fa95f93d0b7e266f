"""A sending domain's DKIM key, the DNS records it must publish, and DKIM signing (RFC 6376).

Signing uses dkimpy for parsing and canonicalisation (relaxed/relaxed) and header selection, and
`cryptography` (OpenSSL) for the RSA operation: dkimpy's own RSA is pure Python, ~7 ms per signature
on our machines against well under 1 ms with OpenSSL, and a signature is made for every message.
"""

from __future__ import annotations

import base64
import hashlib
import time

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy

from schemas.dns_records import DEFAULT_RETURN_PATH_LABEL, DnsRecord, dkim_record_value, dns_records
from schemas.domain_names import to_ascii_domain
from security.dkim_keys import KEY_BITS, generate_domain_key

# Re-exported: the key pair and the record set are part of this module's documented surface.
__all__ = [
    "DEFAULT_RETURN_PATH_LABEL",
    "KEY_BITS",
    "DkimKeyError",
    "DkimSigner",
    "DnsRecord",
    "dkim_record_value",
    "dns_records",
    "generate_domain_key",
]

SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
_CANONICALIZATION = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_SIGNATURE_HEADER = b"DKIM-Signature"


class DkimKeyError(ValueError):
    """The private key is not a usable RSA key."""


class DkimSigner:
    """Signs rendered messages for one domain and selector (rsa-sha256, relaxed/relaxed)."""

    def __init__(self, domain: str, selector: str, private_pem: bytes | str) -> None:
        self.domain = to_ascii_domain(domain.rstrip("."))
        self.selector = selector
        self._key = _load_rsa_key(private_pem)

    def sign(self, message: bytes, *, now: float | None = None) -> bytes:
        """`message` with a DKIM-Signature header prepended."""
        headers, body = dkimpy.rfc822_parse(message)
        include = tuple(name.lower().encode("ascii") for name in SIGNED_HEADERS)
        body_hash = base64.b64encode(hashlib.sha256(_CANONICALIZATION.canonicalize_body(body)).digest())
        value = self._tag_list(include, body_hash, int(time.time() if now is None else now))
        hasher = hashlib.sha256()
        dkimpy.hash_headers(
            hasher,
            _CANONICALIZATION,
            _CANONICALIZATION.canonicalize_headers(headers),
            include,
            (_SIGNATURE_HEADER, b" " + value),
            None,
        )
        signature = self._key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        header = value + base64.b64encode(signature)
        return (
            b"DKIM-Signature: " + dkimpy.fold(header, namelen=len(_SIGNATURE_HEADER) + 2) + b"\r\n" + message
        )

    def _tag_list(self, include: tuple[bytes, ...], body_hash: bytes, timestamp: int) -> bytes:
        tags = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", b"relaxed/relaxed"),
            (b"d", self.domain.encode("ascii")),
            (b"s", self.selector.encode("ascii")),
            (b"t", str(timestamp).encode("ascii")),
            (b"h", b" : ".join(include)),  # spaces let the header fold between names
            (b"bh", body_hash),
            (b"b", b""),
        ]
        return b"; ".join(name + b"=" + tag_value for name, tag_value in tags)


def _load_rsa_key(private_pem: bytes | str) -> rsa.RSAPrivateKey:
    data = private_pem.encode("ascii") if isinstance(private_pem, str) else private_pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"unreadable DKIM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError("DKIM key must be RSA")
    return key
