"""Postmark simulator: `POST /email` and `POST /email/batch` (≤ 500), `X-Postmark-Server-Token`.

Answers `{"To","SubmittedAt","MessageID","ErrorCode":0,"Message":"OK"}` (a batch: one such object
per message, failures per message with their `ErrorCode`); request errors are 422
`{"ErrorCode","Message"}` (300 invalid request, 406 inactive recipient for `inactive*@`), 401 with
ErrorCode 10 for a bad token, 429 with `Retry-After`, 500. ≤ 50 recipients per message. Webhooks
are one JSON record per POST (`RecordType` Delivery, Bounce, SpamComplaint, Open, Click), unsigned:
Postmark protects them with HTTP Basic credentials in the webhook URL, so put them in `webhook_url`.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from providers.simulators.base import (
    ENGAGEMENT_LINK,
    SIMULATOR,
    RecordedAttachment,
    RecordedMessage,
    SimulatorOptions,
    SimulatorState,
    WebhookRequest,
    admit,
    build_app,
    email_of,
    formatted_addresses,
    injected_failure,
    recipient_events,
    recipient_failure,
    whole_seconds,
)

MAX_BATCH = 500
MAX_RECIPIENTS = 50
INACTIVE_PREFIX = "inactive"
SERVER_ID = 23


class Header(msgspec.Struct):
    Name: str
    Value: str


class AttachmentObject(msgspec.Struct, kw_only=True):
    Name: str
    Content: str
    ContentType: str = "application/octet-stream"
    ContentID: str | None = None


class Email(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    From: str
    To: str
    Cc: str | None = None
    Bcc: str | None = None
    Subject: str = ""
    Tag: str | None = None
    HtmlBody: str | None = None
    TextBody: str | None = None
    ReplyTo: str | None = None
    Headers: list[Header] = []
    TrackOpens: bool | None = None
    TrackLinks: str | None = None
    Metadata: dict[str, str] = {}
    Attachments: list[AttachmentObject] = []
    MessageStream: str = "outbound"


_single_decoder = msgspec.json.Decoder(Email)
_batch_decoder = msgspec.json.Decoder(list[Email])


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ErrorCode": code, "Message": message}, status=status, headers=headers)


class PostmarkDialect:
    def unauthorized(self) -> web.Response:
        return _error(401, 10, "Request does not contain a valid Server token.")

    def throttled(self, wait: float, now: float) -> web.Response:
        return _error(429, 429, "Rate limit exceeded.", {"Retry-After": str(whole_seconds(wait))})

    def unavailable(self) -> web.Response:
        return _error(500, 0, "Internal server error.")


DIALECT = PostmarkDialect()


async def send_email(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    refusal = admit(
        state, DIALECT, request.headers.get("X-Postmark-Server-Token"), time.monotonic(), time.time()
    )
    if refusal is not None:
        return refusal
    try:
        record = to_record(_single_decoder.decode(await request.read()), request.path)
    except msgspec.DecodeError as exc:
        return _error(422, 402, f"Received invalid JSON input: {exc}")
    except Refused as exc:
        return _error(422, exc.code, str(exc))
    if injected_failure(state, record.recipients) == "transient":
        return DIALECT.unavailable()
    try:
        result = _accept(state, record)
    except Refused as exc:
        return _error(422, exc.code, str(exc))
    return web.json_response(result)


async def send_batch(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    refusal = admit(
        state, DIALECT, request.headers.get("X-Postmark-Server-Token"), time.monotonic(), time.time()
    )
    if refusal is not None:
        return refusal
    try:
        emails = _batch_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _error(422, 402, f"Received invalid JSON input: {exc}")
    if len(emails) > MAX_BATCH:
        return _error(422, 410, f"Too many batch messages: at most {MAX_BATCH} per request.")
    recipients = [r for e in emails for r in formatted_addresses([e.To, e.Cc or "", e.Bcc or ""])]
    if injected_failure(state, recipients) == "transient":
        return DIALECT.unavailable()
    return web.json_response([_batch_entry(state, e, request.path) for e in emails])


def _batch_entry(state: SimulatorState, email: Email, path: str) -> dict[str, Any]:
    try:
        return _accept(state, to_record(email, path))
    except Refused as exc:
        return {"ErrorCode": exc.code, "Message": str(exc)}


def _accept(state: SimulatorState, record: RecordedMessage) -> dict[str, Any]:
    inactive = [email_of(r) for r in record.recipients if email_of(r).lower().startswith(INACTIVE_PREFIX)]
    if inactive:
        raise Refused(
            406,
            "You tried to send to recipient(s) that have been marked as inactive. Found inactive "
            f"addresses: {', '.join(inactive)}. Inactive recipients are ones that have generated a hard "
            "bounce, a spam complaint, or a manual suppression.",
        )
    if recipient_failure(record.recipients) == "permanent":
        raise Refused(300, "Invalid 'To' address: the address is not a valid email address.")
    accepted = msgspec.structs.replace(record, provider_message_id=str(uuid.uuid4()))
    state.record([accepted])
    state.webhooks.submit(webhooks_for(state, accepted))
    return {
        "To": ", ".join(accepted.to),
        "SubmittedAt": _now_iso(),
        "MessageID": accepted.provider_message_id,
        "ErrorCode": 0,
        "Message": "OK",
    }


def to_record(email: Email, path: str) -> RecordedMessage:
    to, cc, bcc = (formatted_addresses([value]) if value else [] for value in (email.To, email.Cc, email.Bcc))
    if not to:
        raise Refused(300, "Invalid 'To' address: Zero recipients specified.")
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise Refused(300, f"Invalid 'To' address: maximum of {MAX_RECIPIENTS} recipients per message.")
    if email.HtmlBody is None and email.TextBody is None:
        raise Refused(300, "Provide either email TextBody or HtmlBody or both.")
    return RecordedMessage(
        provider_message_id="",
        sender=formatted_addresses([email.From])[0],
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=formatted_addresses([email.ReplyTo]) if email.ReplyTo else [],
        subject=email.Subject,
        html=email.HtmlBody,
        text=email.TextBody,
        headers={h.Name: h.Value for h in email.Headers},
        tags=[email.Tag] if email.Tag else [],
        metadata=dict(email.Metadata),
        attachments=[_attachment(a) for a in email.Attachments],
        request_path=path,
    )


def _attachment(attachment: AttachmentObject) -> RecordedAttachment:
    try:
        content = base64.b64decode(attachment.Content, validate=True)
    except ValueError:
        raise Refused(300, f"Attachment {attachment.Name!r} content is not base64.") from None
    content_id = attachment.ContentID.removeprefix("cid:") if attachment.ContentID else None
    return RecordedAttachment(attachment.Name, attachment.ContentType, content, content_id)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def webhooks_for(state: SimulatorState, message: RecordedMessage) -> list[WebhookRequest]:
    records = [
        record(kind, email_of(r), message)
        for r in message.recipients
        for kind in recipient_events(r, state.options.webhook_events)
    ]
    return [
        WebhookRequest(body=json.dumps(r).encode(), headers={"Content-Type": "application/json"})
        for r in records
    ]


def record(kind: str, recipient: str, message: RecordedMessage) -> dict[str, Any]:
    common = {
        "MessageID": message.provider_message_id,
        "MessageStream": "outbound",
        "ServerID": SERVER_ID,
        "Tag": message.tags[0] if message.tags else "",
        "Metadata": message.metadata,
    }
    client = {
        "Client": {"Name": "Firefox", "Company": "Mozilla", "Family": "Firefox"},
        "OS": {"Name": "Linux", "Company": "Linux", "Family": "Linux"},
        "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        "Geo": {"CountryISOCode": "US", "IP": "203.0.113.7"},
        "ReceivedAt": _now_iso(),
        "Recipient": recipient,
    }
    match kind:
        case "delivered":
            return {
                "RecordType": "Delivery",
                **common,
                "Recipient": recipient,
                "DeliveredAt": _now_iso(),
                "Details": "smtp;250 2.0.0 OK",
            }
        case "bounced":
            return {
                "RecordType": "Bounce",
                **common,
                **_bounce("HardBounce", 1, "Hard bounce", recipient, message),
            }
        case "complained":
            return {
                "RecordType": "SpamComplaint",
                **common,
                **_bounce("SpamComplaint", 512, "Spam complaint", recipient, message),
            }
        case "opened":
            return {"RecordType": "Open", **common, **client, "FirstOpen": True, "ReadSeconds": 5}
        case "clicked":
            return {
                "RecordType": "Click",
                **common,
                **client,
                "ClickLocation": "HTML",
                "OriginalLink": ENGAGEMENT_LINK,
            }
    raise ValueError(kind)


def _bounce(kind: str, code: int, name: str, recipient: str, message: RecordedMessage) -> dict[str, Any]:
    return {
        "ID": random.randrange(1, 2**62),
        "Type": kind,
        "TypeCode": code,
        "Name": name,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": recipient,
        "From": email_of(message.sender),
        "BouncedAt": _now_iso(),
        "DumpAvailable": False,
        "Inactive": True,
        "CanActivate": True,
        "Subject": message.subject,
    }


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    state = SimulatorState(options or SimulatorOptions())
    return build_app(state, [web.post("/email", send_email), web.post("/email/batch", send_batch)])
