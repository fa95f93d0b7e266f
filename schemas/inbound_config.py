"""Per-server verification secrets for inbound webhooks, and the SNS certificate trust rule."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import msgspec

# Amazon SNS serves its signing certificates (and subscription confirmation links) only from these.
_AWS_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


class SnsTrust(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which URLs may serve SNS signing certificates and subscription confirmations.

    By default only `https://sns.<region>.amazonaws.com[.cn]/…`. `url_prefixes` adds exact
    prefixes (each `scheme://host[:port]/…` ending in `/`), e.g. a local certificate server in tests.
    """

    allow_aws_hosts: bool = True
    url_prefixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for prefix in self.url_prefixes:
            parts = urlsplit(prefix)
            if parts.scheme not in ("http", "https") or not parts.hostname or not prefix.endswith("/"):
                raise ValueError(f"SNS trust prefix must be scheme://host[:port]/…/, got {prefix!r}")

    def allows(self, url: str) -> bool:
        if any(url.startswith(prefix) for prefix in self.url_prefixes):
            return True
        return self.allow_aws_hosts and _is_aws_sns_url(url)


def _is_aws_sns_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.username is None
        and port in (None, 443)
        and _AWS_SNS_HOST.fullmatch(parts.hostname or "") is not None
    )


class InboundConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One sending server's inbound verification settings; a provider left unset rejects everything."""

    mailgun_signing_key: str | None = None
    sendgrid_public_key: str | None = None  # base64 DER SubjectPublicKeyInfo (PEM also accepted)
    resend_secret: str | None = None  # Svix secret, `whsec_<base64>`
    postmark_user: str | None = None
    postmark_password: str | None = None
    sns_topic_arn: str | None = None
    sns_trust: SnsTrust = SnsTrust()
    timestamp_tolerance: float = 300.0  # seconds, either direction

    __secret_fields__ = ("mailgun_signing_key", "resend_secret", "postmark_password")
