"""The SES event JSON carried in an SNS Notification's `Message` (event publishing `eventType`, or
the older feedback notifications' `notificationType`), decoded into typed structs."""

from __future__ import annotations

import msgspec

from providers.inbound.errors import MalformedPayload


class _Camel(msgspec.Struct, rename="camel", kw_only=True):
    pass


class SesMail(_Camel):
    message_id: str
    timestamp: str
    destination: list[str] = []
    tags: dict[str, list[str]] = {}


class SesRecipientStatus(_Camel):
    email_address: str
    status: str | None = None
    diagnostic_code: str | None = None


class SesBounce(_Camel):
    bounce_type: str
    timestamp: str
    bounced_recipients: list[SesRecipientStatus]
    bounce_sub_type: str | None = None


class SesComplaint(_Camel):
    timestamp: str
    complained_recipients: list[SesRecipientStatus]
    complaint_feedback_type: str | None = None


class SesDelivery(_Camel):
    timestamp: str
    recipients: list[str]
    smtp_response: str | None = None


class SesDeliveryDelay(_Camel):
    timestamp: str
    delayed_recipients: list[SesRecipientStatus]
    delay_type: str | None = None


class SesEngagement(_Camel):
    timestamp: str
    ip_address: str | None = None
    user_agent: str | None = None
    link: str | None = None


class SesReject(_Camel):
    reason: str | None = None


class SesFailure(_Camel):
    error_message: str | None = None
    template_name: str | None = None


class SesEvent(_Camel):
    mail: SesMail
    event_type: str | None = None
    notification_type: str | None = None
    bounce: SesBounce | None = None
    complaint: SesComplaint | None = None
    delivery: SesDelivery | None = None
    delivery_delay: SesDeliveryDelay | None = None
    open: SesEngagement | None = None
    click: SesEngagement | None = None
    reject: SesReject | None = None
    failure: SesFailure | None = None


_decoder = msgspec.json.Decoder(SesEvent)


def decode_ses_event(message: str) -> SesEvent:
    try:
        return _decoder.decode(message)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"SNS Message is not an SES event: {exc}") from None
