"""SendGrid v3 simulator: `POST /v3/mail/send` (Bearer key, JSON), answering 202 + `X-Message-Id`.

Validates what SendGrid documents: 1–1,000 personalizations, ≤ 1,000 recipients in all, each
personalization with a `to` and no address twice, `from`, a subject (top level or in every
personalization), `content` with text/plain before text/html, `reply_to` xor `reply_to_list`,
≤ 10 categories. Errors are `{"errors":[{"message","field","help"}]}`; 429 carries
`X-RateLimit-Limit/Remaining/Reset` (Unix time). One recorded message per personalization.
Event webhooks are JSON arrays (one per send request) signed with ECDSA P-256/SHA-256 over
timestamp + body: headers `X-Twilio-Email-Event-Webhook-Signature` (base64 DER) and `-Timestamp`;
the public key (base64 DER SubjectPublicKeyInfo) is `SendGridState.public_key`.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
    injected_failure,
    recipient_events,
)

MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class EmailObject(msgspec.Struct):
    email: str
    name: str | None = None

    def formatted(self) -> str:
        from email.utils import formataddr

        return formataddr((self.name, self.email)) if self.name else self.email


class Personalization(msgspec.Struct, kw_only=True):
    to: list[EmailObject] = []
    cc: list[EmailObject] = []
    bcc: list[EmailObject] = []
    subject: str | None = None
    headers: dict[str, str] = {}
    custom_args: dict[str, str] = {}
    substitutions: dict[str, str] = {}
    send_at: int | None = None


class Content(msgspec.Struct):
    type: str
    value: str


class AttachmentObject(msgspec.Struct, kw_only=True):
    content: str
    filename: str
    type: str = "application/octet-stream"
    disposition: str = "attachment"
    content_id: str | None = None


# Unknown fields (mail_settings, tracking_settings, asm, …) are accepted as SendGrid does.
class MailSend(msgspec.Struct, kw_only=True):
    personalizations: list[Personalization]
    from_: EmailObject = msgspec.field(name="from")
    subject: str | None = None
    content: list[Content] = []
    reply_to: EmailObject | None = None
    reply_to_list: list[EmailObject] = []
    attachments: list[AttachmentObject] = []
    headers: dict[str, str] = {}
    categories: list[str] = []
    custom_args: dict[str, str] = {}


_decoder = msgspec.json.Decoder(MailSend)


class InvalidRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _errors(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return web.json_response(body, status=status, headers=headers)


class SendGridDialect:
    def unauthorized(self) -> web.Response:
        return _errors(401, "The provided authorization grant is invalid, expired, or revoked")

    def throttled(self, wait: float, now: float) -> web.Response:
        headers = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(now + wait)),
        }
        return _errors(429, "too many requests", headers=headers)

    def unavailable(self) -> web.Response:
        return _errors(503, "Service Unavailable")


DIALECT = SendGridDialect()


class SendGridState(SimulatorState):
    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()


def _bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key if scheme == "Bearer" else None


async def mail_send(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    refusal = admit(state, DIALECT, _bearer(request), time.monotonic(), time.time())
    if refusal is not None:
        return refusal
    try:
        mail = _decoder.decode(await request.read())
        messages = to_records(mail, request.path)
    except msgspec.DecodeError as exc:
        return _errors(400, f"Bad Request: {exc}")
    except InvalidRequest as exc:
        return _errors(400, str(exc), exc.field)
    failure = injected_failure(state, [r for m in messages for r in m.recipients])
    if failure == "permanent":
        return _errors(400, "Does not contain a valid address.", "personalizations.0.to.0.email")
    if failure == "transient":
        return DIALECT.unavailable()
    x_message_id = secrets.token_urlsafe(16)[:22]
    accepted = [msgspec.structs.replace(m, provider_message_id=x_message_id) for m in messages]
    state.record(accepted)
    if isinstance(state, SendGridState):
        state.webhooks.submit(signed_events(state, accepted))
    return web.Response(status=202, headers={"X-Message-Id": x_message_id})


def validate(mail: MailSend) -> None:
    if not 1 <= len(mail.personalizations) <= 1000:
        raise InvalidRequest(
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        )
    total = 0
    for index, entry in enumerate(mail.personalizations):
        if not entry.to:
            raise InvalidRequest(
                "The to array is required for all personalization objects, and must have at least one email object with a valid email address.",  # noqa: E501 (verbatim)
                f"personalizations.{index}.to",
            )
        emails = [e.email.lower() for e in (*entry.to, *entry.cc, *entry.bcc)]
        if len(set(emails)) != len(emails):
            raise InvalidRequest(
                "Each email address in the personalization block should be unique between to, cc, and bcc.",
                f"personalizations.{index}",
            )
        if mail.subject is None and entry.subject is None:
            raise InvalidRequest("The subject is required.", "subject")
        total += len(emails)
    if total > MAX_RECIPIENTS:
        raise InvalidRequest(
            f"The total number of recipients must be no more than {MAX_RECIPIENTS}.", "personalizations"
        )
    _validate_content(mail)


def _validate_content(mail: MailSend) -> None:
    if not mail.content or any(not c.value for c in mail.content):
        raise InvalidRequest(
            "Unless a valid template_id is provided, the content parameter is required.", "content"
        )
    types = [c.type for c in mail.content]
    if "text/plain" in types and types.index("text/plain") != 0:
        raise InvalidRequest(
            "If present, text/plain content must be first, followed by text/html.", "content"
        )
    if mail.reply_to is not None and mail.reply_to_list:
        raise InvalidRequest("reply_to and reply_to_list are mutually exclusive.", "reply_to")
    if len(mail.categories) > MAX_CATEGORIES:
        raise InvalidRequest(f"Too many categories: at most {MAX_CATEGORIES}.", "categories")


def to_records(mail: MailSend, path: str) -> list[RecordedMessage]:
    validate(mail)
    bodies = {c.type: c.value for c in mail.content}
    reply_to = [mail.reply_to] if mail.reply_to else mail.reply_to_list
    attachments = [_attachment(a) for a in mail.attachments]
    return [
        RecordedMessage(
            provider_message_id="",
            sender=mail.from_.formatted(),
            to=[e.formatted() for e in entry.to],
            cc=[e.formatted() for e in entry.cc],
            bcc=[e.formatted() for e in entry.bcc],
            reply_to=[e.formatted() for e in reply_to],
            subject=entry.subject if entry.subject is not None else mail.subject or "",
            html=bodies.get("text/html"),
            text=bodies.get("text/plain"),
            headers={**mail.headers, **entry.headers},
            tags=list(mail.categories),
            metadata={**mail.custom_args, **entry.custom_args},
            attachments=attachments,
            request_path=path,
        )
        for entry in mail.personalizations
    ]


def _attachment(attachment: AttachmentObject) -> RecordedAttachment:
    try:
        content = base64.b64decode(attachment.content, validate=True)
    except ValueError:
        raise InvalidRequest(
            "The attachment content must be base64 encoded.", "attachments.content"
        ) from None
    return RecordedAttachment(attachment.filename, attachment.type, content, attachment.content_id)


def event_objects(messages: list[RecordedMessage], enabled: tuple[str, ...]) -> list[dict[str, Any]]:
    events = []
    for message in messages:
        for number, recipient in enumerate(message.recipients):
            sg_message_id = f"{message.provider_message_id}.filterdrecv-{number}.{secrets.token_hex(4)}.0"
            for kind in recipient_events(recipient, enabled):
                events.append(_event(kind, email_of(recipient), message, sg_message_id))
    return events


def _event(kind: str, recipient: str, message: RecordedMessage, sg_message_id: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        **message.metadata,  # custom_args come back as top-level keys
        "email": recipient,
        "timestamp": int(time.time()),
        "smtp-id": f"<{message.provider_message_id}@ismtpd0001p1.sendgrid.net>",
        "sg_event_id": secrets.token_urlsafe(16),
        "sg_message_id": sg_message_id,
        "category": message.tags,
    }
    event.update(_details(kind))
    return event


def _details(kind: str) -> dict[str, Any]:
    engagement = {"useragent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "203.0.113.7"}
    match kind:
        case "delivered":
            return {"event": "delivered", "response": "250 2.0.0 OK", "tls": 1}
        case "bounced":
            return {
                "event": "bounce",
                "type": "bounce",
                "status": "5.1.1",
                "bounce_classification": "Invalid Address",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            }
        case "complained":
            return {"event": "spamreport"}
        case "opened":
            return {"event": "open", "sg_machine_open": False, **engagement}
        case "clicked":
            return {
                "event": "click",
                "url": ENGAGEMENT_LINK,
                "url_offset": {"index": 0, "type": "html"},
                **engagement,
            }
    raise ValueError(kind)


def signed_events(state: SendGridState, messages: list[RecordedMessage]) -> list[WebhookRequest]:
    events = event_objects(messages, state.options.webhook_events)
    if not events:
        return []
    body = json.dumps(events).encode()
    timestamp = str(int(time.time()))
    signature = state.private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: timestamp,
    }
    return [WebhookRequest(body=body, headers=headers)]


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    state = SendGridState(options or SimulatorOptions())
    return build_app(state, [web.post("/v3/mail/send", mail_send)])


def public_key(app: web.Application) -> str:
    state = app[SIMULATOR]
    assert isinstance(state, SendGridState)
    return state.public_key
