"""The providers' side of each signature scheme, written from their documentation independently of
the code under test, so a test passes only if both sides agree with the documented algorithm."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

NOW = 1_716_200_140.0


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_cert(key: rsa.RSAPrivateKey, *, valid_from: float, valid_until: float) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(valid_from, UTC))
        .not_valid_after(datetime.fromtimestamp(valid_until, UTC))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def cert_valid_around_now(key: rsa.RSAPrivateKey) -> bytes:
    return self_signed_cert(
        key, valid_from=NOW - 86_400, valid_until=NOW + timedelta(days=365).total_seconds()
    )


def sns_sign(envelope: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """AWS: sort-ordered `Name\\nValue\\n` pairs; Notification signs Message, MessageId, Subject (if
    present), Timestamp, TopicArn, Type; confirmations add SubscribeURL and Token."""
    if envelope["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    canonical = "".join(f"{name}\n{envelope[name]}\n" for name in names if name in envelope)
    digest = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), digest)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> dict[str, str]:
    digest = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_verification_key(key: ec.EllipticCurvePrivateKey) -> str:
    """What the SendGrid dashboard shows: base64 DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
