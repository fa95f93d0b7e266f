"""What can go wrong with an inbound provider webhook, and how the route answers each.

InboundError
├── InvalidSignature    401: not provably from the provider (bad/missing signature or credentials,
│                       stale timestamp, replayed token, untrusted certificate, wrong topic);
│                       nothing may be recorded
├── MalformedPayload    400: verified (or verifiable) but not the documented shape
├── CertUnavailable     503: the SNS signing certificate could not be fetched; SNS retries
└── UnsupportedProvider 404: no inbound parser for that provider name
"""

from __future__ import annotations


class InboundError(Exception):
    """Base of every inbound webhook failure."""


class InvalidSignature(InboundError):
    pass


class MalformedPayload(InboundError):
    pass


class CertUnavailable(InboundError):
    pass


class UnsupportedProvider(InboundError, LookupError):
    pass
