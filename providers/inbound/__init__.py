"""Inbound provider event webhooks: verify the provider's own signature scheme, then normalise.

The route (`POST /v1/inbound/{provider}/{server_id}`) hands the raw request to `parse_inbound` and
maps the exceptions (see `providers.inbound.errors`): InvalidSignature -> 401 and record nothing,
MalformedPayload -> 400, CertUnavailable -> 503, UnsupportedProvider -> 404. On success it dedupes
the events by `(provider, provider_event_id)`, makes them durable, answers 2xx, and GETs
`confirm_url` (if any) in the background to confirm an SNS subscription.
"""

from __future__ import annotations

from collections.abc import Mapping

from providers.inbound import mailgun, postmark, resend, sendgrid, ses_sns
from providers.inbound.errors import (
    CertUnavailable,
    InboundError,
    InvalidSignature,
    MalformedPayload,
    UnsupportedProvider,
)
from providers.inbound.replay import ReplayGuard
from providers.inbound.sns_certs import CertFetcher, HttpCertFetcher
from schemas.inbound_config import (
    InboundConfig,
    SnsTrust,
    operator_sns_trust,
    untrusted_prefixes,
    with_provider_config,
)
from schemas.provider_events import OUR_MESSAGE_ID_KEY, InboundResult, InboundType, ProviderEvent

__all__ = [
    "INBOUND_PROVIDERS",
    "OUR_MESSAGE_ID_KEY",
    "CertFetcher",
    "CertUnavailable",
    "HttpCertFetcher",
    "InboundConfig",
    "InboundError",
    "InboundResult",
    "InboundType",
    "InvalidSignature",
    "MalformedPayload",
    "ProviderEvent",
    "ReplayGuard",
    "SnsTrust",
    "UnsupportedProvider",
    "operator_sns_trust",
    "parse_inbound",
    "untrusted_prefixes",
    "with_provider_config",
]

INBOUND_PROVIDERS = frozenset({"amazon-ses", "mailgun", "sendgrid", "resend", "postmark"})


async def parse_inbound(
    provider: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    config: InboundConfig,
    server_id: str,
    now: float,
    replay_guard: ReplayGuard | None,
    cert_fetcher: CertFetcher | None,
    sns_trust: SnsTrust = SnsTrust(),
) -> InboundResult:
    """Verify one webhook request and return its normalised events; `now` is epoch seconds.
    `sns_trust` is the operator's (`operator_sns_trust(settings)`); AWS's own hosts by default."""
    lowered = {name.lower(): value for name, value in headers.items()}
    match provider:
        case "amazon-ses":
            return await ses_sns.parse(
                body, config=config, fetch_cert=cert_fetcher, now=now, operator=sns_trust
            )
        case "mailgun":
            return await mailgun.parse(
                body, config=config, server_id=server_id, now=now, replay_guard=replay_guard
            )
        case "sendgrid":
            return sendgrid.parse(lowered, body, config=config, now=now)
        case "resend":
            return resend.parse(lowered, body, config=config, now=now)
        case "postmark":
            return postmark.parse(lowered, body, config=config)
    raise UnsupportedProvider(provider)
