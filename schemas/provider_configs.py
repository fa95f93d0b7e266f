"""Every provider's `config` object: what a sending server stores, validated and sealed by the store.

One msgspec Struct per provider (forbid_unknown_fields, documented in docs/providers.md); fields in
`__secret_fields__` are encrypted at rest and never returned. The Structs live here, below the store,
so `store/servers.py` validates against them without importing `providers/`; each adapter module
(`providers/<name>.py`) takes its own as `Config`. `CONFIG_TYPES` maps the API's provider names.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every adapter's Config; subclasses list their secret field names."""

    __secret_fields__: ClassVar[tuple[str, ...]] = ()

    def outbound_targets(self) -> dict[str, str]:
        """Config field -> the URL (or bare host) it makes the adapter connect to (checked by
        `providers.egress`); overridden where the tenant chooses where the adapter connects."""
        return {}

    def uses_ambient_credentials(self) -> bool:
        """True when the adapter would fall back to the host's own credentials (SES without keys)."""
        return False


class SandboxConfig(ProviderConfig):
    """The sandbox takes no settings."""


class SmtpConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("password", "dkim_private_key")

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: Literal["none", "starttls", "tls"] = "starttls"
    timeout: float = 30.0
    pool_size: int = 8
    helo_name: str | None = None
    validate_certs: bool = True
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: str | None = None

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        dkim = (self.dkim_domain, self.dkim_selector, self.dkim_private_key)
        if any(dkim) and not all(dkim):
            raise ValueError("dkim_domain, dkim_selector and dkim_private_key go together")

    def outbound_targets(self) -> dict[str, str]:
        return {"host": self.host}


class SesConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("secret_access_key", "session_token")

    region: str = "us-east-1"
    # None: the host's AWS credential chain (env, profile, role), if MAILERS_ALLOW_AMBIENT_AWS_CREDENTIALS
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    endpoint_url: str | None = None  # tests and VPC endpoints; None = the regional SES endpoint
    configuration_set: str | None = None  # the set whose event destination publishes to SNS
    sns_topic_arn: str | None = None  # the topic our inbound endpoint accepts notifications from
    timeout_seconds: float = 30.0
    concurrency: int = 8
    throttle_retry_seconds: float = 1.0
    daily_quota_retry_seconds: float = 3600.0

    def outbound_targets(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}

    def uses_ambient_credentials(self) -> bool:
        return not (self.access_key_id and self.secret_access_key)


class MailgunConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("api_key", "webhook_signing_key")

    api_key: str
    domain: str
    base_url: str = "https://api.mailgun.net"  # EU region: https://api.eu.mailgun.net
    webhook_signing_key: str | None = None  # checked by the inbound webhook verifier
    timeout_seconds: float = 30.0
    concurrency: int = 8

    def outbound_targets(self) -> dict[str, str]:
        return {"base_url": self.base_url}


class SendgridConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("api_key",)

    api_key: str
    base_url: str = "https://api.sendgrid.com"  # EU subusers: https://api.eu.sendgrid.com
    webhook_public_key: str | None = None  # base64 DER ECDSA key from the Event Webhook settings
    timeout_seconds: float = 30.0
    concurrency: int = 8

    def outbound_targets(self) -> dict[str, str]:
        return {"base_url": self.base_url}


class ResendConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("api_key", "webhook_secret")

    api_key: str
    base_url: str = "https://api.resend.com"
    webhook_secret: str | None = None  # `whsec_…` signing secret of the webhook endpoint
    timeout_seconds: float = 30.0
    concurrency: int = 4

    def outbound_targets(self) -> dict[str, str]:
        return {"base_url": self.base_url}


class PostmarkConfig(ProviderConfig):
    __secret_fields__: ClassVar[tuple[str, ...]] = ("server_token", "webhook_password")

    server_token: str
    base_url: str = "https://api.postmarkapp.com"
    message_stream: str = "outbound"  # "broadcast" (or a custom stream) for marketing mail
    track_opens: bool | None = None
    track_links: str | None = None  # None | "HtmlAndText" | "HtmlOnly" | "TextOnly"
    webhook_username: str | None = None  # basic-auth credentials put in the webhook URL
    webhook_password: str | None = None
    timeout_seconds: float = 30.0
    concurrency: int = 4

    def outbound_targets(self) -> dict[str, str]:
        return {"base_url": self.base_url}


CONFIG_TYPES: dict[str, type[ProviderConfig]] = {
    "sandbox": SandboxConfig,
    "smtp": SmtpConfig,
    "amazon-ses": SesConfig,
    "mailgun": MailgunConfig,
    "sendgrid": SendgridConfig,
    "resend": ResendConfig,
    "postmark": PostmarkConfig,
}
