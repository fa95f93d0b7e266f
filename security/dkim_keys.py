"""DKIM key pairs: generation only (signing is `providers/dkim.py`'s, which needs the rendered message).

Here, below the store, because a sending domain's record is built with a fresh key by the store's
callers and sealed by the store; nothing here knows about messages or providers.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048


def generate_domain_key() -> tuple[bytes, str]:
    """A new RSA-2048 key: (PKCS#8 PEM private key, base64 SubjectPublicKeyInfo for the `p=` tag)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode("ascii")
