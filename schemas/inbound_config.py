"""Per-server verification secrets for inbound webhooks, and the SNS certificate trust rule.

SNS trust has two levels. The operator's (`operator_sns_trust`: AWS's `sns.<region>.amazonaws.com`
plus MAILERS_SNS_TRUSTED_URL_PREFIXES) is the limit; a server's own `inbound.sns_trust` can only
narrow it: a URL must pass both, and a server prefix the operator does not trust is refused at save
(`untrusted_prefixes`). Before, a tenant's prefix alone made the ingress fetch any URL: SSRF.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import msgspec

from schemas.settings import Settings

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


def operator_sns_trust(settings: Settings) -> SnsTrust:
    return SnsTrust(url_prefixes=settings.sns_trusted_url_prefixes)


def untrusted_prefixes(server: SnsTrust, operator: SnsTrust) -> list[str]:
    """The server's prefixes the operator's trust does not cover (each must lie inside it)."""
    return [prefix for prefix in server.url_prefixes if not operator.allows(prefix)]


def with_provider_config(inbound: InboundConfig, provider: str, config: object) -> InboundConfig:
    """`inbound` completed by the verification fields docs/providers.md documents in `config`
    (Mailgun `webhook_signing_key`, Resend `webhook_secret`, SES `sns_topic_arn`); `inbound` wins."""
    pairs = _CONFIG_FIELDS.get(provider, ())
    missing = {
        ours: getattr(config, theirs, None)
        for ours, theirs in pairs
        if getattr(inbound, ours) is None and getattr(config, theirs, None)
    }
    return msgspec.structs.replace(inbound, **missing) if missing else inbound


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


# provider -> (InboundConfig field, the provider Config field documented for the same secret)
_CONFIG_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "mailgun": (("mailgun_signing_key", "webhook_signing_key"),),
    "resend": (("resend_secret", "webhook_secret"),),
    "amazon-ses": (("sns_topic_arn", "sns_topic_arn"),),
}
