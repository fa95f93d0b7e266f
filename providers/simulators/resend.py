"""Resend simulator: `POST /emails` and `POST /emails/batch` (≤ 100, no attachments), Bearer key.

Answers `{"id"}` / `{"data":[{"id"}]}`; errors `{"statusCode","name","message"}` (401
`missing_api_key`, 403 `invalid_api_key`, 422 `validation_error`, 429 `rate_limit_exceeded` with
`retry-after` and `ratelimit-*` headers, 500 `application_error`). `Idempotency-Key` is honoured for
24 h: the same key and body replays the first answer, a different body is 409
`invalid_idempotent_request`. Webhooks are signed the Svix way: `svix-id`, `svix-timestamp`,
`svix-signature: v1,<base64 HMAC-SHA256(base64decode(secret minus whsec_), id.ts.body)>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
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
    whole_seconds,
)

MAX_BATCH = 100
MAX_TO = 50
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class Tag(msgspec.Struct):
    name: str
    value: str


class AttachmentObject(msgspec.Struct, kw_only=True):
    filename: str
    content: str | None = None
    path: str | None = None
    content_type: str | None = None
    content_id: str | None = None


class Email(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    to: str | list[str]
    subject: str
    cc: str | list[str] = []
    bcc: str | list[str] = []
    reply_to: str | list[str] = []
    html: str | None = None
    text: str | None = None
    react: str | None = None
    headers: dict[str, str] = {}
    attachments: list[AttachmentObject] = []
    tags: list[Tag] = []
    scheduled_at: str | None = None
    topic_id: str | None = None


_single_decoder = msgspec.json.Decoder(Email)
_batch_decoder = msgspec.json.Decoder(list[Email])


class InvalidRequest(Exception):
    pass


def _error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"statusCode": status, "name": name, "message": message}, status=status, headers=headers
    )


class ResendDialect:
    def unauthorized(self) -> web.Response:
        return _error(403, "invalid_api_key", "API key is invalid")

    def throttled(self, wait: float, now: float) -> web.Response:
        seconds = str(whole_seconds(wait))
        headers = {
            "retry-after": seconds,
            "ratelimit-limit": "2",
            "ratelimit-remaining": "0",
            "ratelimit-reset": seconds,
        }
        return _error(
            429, "rate_limit_exceeded", "Too many requests. You can only make 2 requests per second.", headers
        )

    def unavailable(self) -> web.Response:
        return _error(500, "application_error", "An unexpected error occurred, please try again later.")


DIALECT = ResendDialect()


class ResendState(SimulatorState):
    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        self.idempotent: dict[str, tuple[str, int, bytes]] = {}  # key -> (body digest, status, answer)


def _bearer(request: web.Request) -> str | None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key if scheme == "Bearer" and key else None


async def send_email(request: web.Request) -> web.Response:
    return await _handle(request, batch=False)


async def send_batch(request: web.Request) -> web.Response:
    return await _handle(request, batch=True)


async def _handle(request: web.Request, *, batch: bool) -> web.Response:
    state = request.app[SIMULATOR]
    assert isinstance(state, ResendState)
    if _bearer(request) is None:
        return _error(401, "missing_api_key", "Missing API key in the authorization header")
    refusal = admit(state, DIALECT, _bearer(request), time.monotonic(), time.time())
    if refusal is not None:
        return refusal
    body = await request.read()
    key = request.headers.get("Idempotency-Key")
    digest = hashlib.sha256(request.path.encode() + body).hexdigest()
    if key is not None and key in state.idempotent:
        return _replay(state.idempotent[key], digest)
    response = _accept(state, body, request.path, batch=batch)
    if key is not None and response.status < 500 and isinstance(response.body, (bytes, bytearray)):
        state.idempotent[key] = (digest, response.status, bytes(response.body))
    return response


def _replay(stored: tuple[str, int, bytes], digest: str) -> web.Response:
    stored_digest, status, answer = stored
    if stored_digest != digest:
        return _error(
            409, "invalid_idempotent_request", "Same idempotency key used with a different request payload."
        )
    return web.Response(status=status, body=answer, content_type="application/json")


def _accept(state: SimulatorState, body: bytes, path: str, *, batch: bool) -> web.Response:
    try:
        emails = _batch_decoder.decode(body) if batch else [_single_decoder.decode(body)]
        records = [to_record(e, path, in_batch=batch) for e in emails]
        if batch and not 1 <= len(records) <= MAX_BATCH:
            raise InvalidRequest(f"The batch must contain between 1 and {MAX_BATCH} emails.")
    except (msgspec.DecodeError, InvalidRequest) as exc:
        return _error(422, "validation_error", str(exc))
    failure = injected_failure(state, [r for m in records for r in m.recipients])
    if failure == "permanent":
        return _error(
            422,
            "validation_error",
            "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.",  # noqa: E501 (verbatim)
        )
    if failure == "transient":
        return DIALECT.unavailable()
    accepted = [msgspec.structs.replace(r, provider_message_id=str(uuid.uuid4())) for r in records]
    state.record(accepted)
    state.webhooks.submit(webhooks_for(state, accepted))
    ids = [{"id": r.provider_message_id} for r in accepted]
    return web.json_response({"data": ids} if batch else ids[0])


def _listed(value: str | list[str]) -> list[str]:
    return formatted_addresses([value] if isinstance(value, str) else value)


def to_record(email: Email, path: str, *, in_batch: bool) -> RecordedMessage:
    to = _listed(email.to)
    if not 1 <= len(to) <= MAX_TO:
        raise InvalidRequest(f"The `to` field must contain between 1 and {MAX_TO} addresses.")
    if email.html is None and email.text is None and email.react is None:
        raise InvalidRequest("Missing `html` or `text` field.")
    if in_batch and (email.attachments or email.scheduled_at):
        raise InvalidRequest("The `attachments` and `scheduled_at` fields are not supported in batch emails.")
    for tag in email.tags:
        if not (_TAG_TEXT.match(tag.name) and _TAG_TEXT.match(tag.value)):
            raise InvalidRequest("Tags should only contain ASCII letters, numbers, underscores, or dashes.")
    return RecordedMessage(
        provider_message_id="",
        sender=formatted_addresses([email.from_])[0],
        to=to,
        cc=_listed(email.cc),
        bcc=_listed(email.bcc),
        reply_to=_listed(email.reply_to),
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=dict(email.headers),
        metadata={t.name: t.value for t in email.tags},  # Resend tags are name/value pairs
        attachments=[_attachment(a) for a in email.attachments],
        request_path=path,
    )


def _attachment(attachment: AttachmentObject) -> RecordedAttachment:
    if attachment.content is None:
        raise InvalidRequest("Attachment `content` or `path` is required; the simulator fetches no paths.")
    try:
        content = base64.b64decode(attachment.content, validate=True)
    except ValueError:
        raise InvalidRequest("Attachment `content` must be base64.") from None
    content_type = attachment.content_type or "application/octet-stream"
    return RecordedAttachment(attachment.filename, content_type, content, attachment.content_id)


_TYPES = {
    "delivered": "email.delivered",
    "bounced": "email.bounced",
    "complained": "email.complained",
    "opened": "email.opened",
    "clicked": "email.clicked",
}


def webhooks_for(state: SimulatorState, messages: list[RecordedMessage]) -> list[WebhookRequest]:
    requests = []
    for message in messages:
        for recipient in message.recipients:
            for kind in recipient_events(recipient, state.options.webhook_events):
                requests.append(sign(state.webhook_secret, event_payload(kind, email_of(recipient), message)))
    return requests


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(kind: str, recipient: str, message: RecordedMessage) -> dict[str, Any]:
    data: dict[str, Any] = {
        "created_at": _now_iso(),
        "email_id": message.provider_message_id,
        "from": message.sender,
        "to": [recipient],
        "subject": message.subject,
        "tags": dict(message.metadata),
    }
    engagement = {
        "ipAddress": "203.0.113.7",
        "timestamp": _now_iso(),
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
    }
    if kind == "bounced":
        data["bounce"] = {
            "message": "The recipient's email address does not exist.",
            "type": "Permanent",
            "subType": "General",
        }
    elif kind == "clicked":
        data["click"] = {**engagement, "link": ENGAGEMENT_LINK}
    elif kind == "opened":
        data["open"] = engagement
    return {"type": _TYPES[kind], "created_at": _now_iso(), "data": data}


def sign(secret: str, payload: dict[str, Any]) -> WebhookRequest:
    body = json.dumps(payload).encode()
    svix_id, timestamp = f"msg_{secrets.token_urlsafe(18)}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{svix_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "svix-id": svix_id,
        "svix-timestamp": timestamp,
        "svix-signature": f"v1,{base64.b64encode(mac).decode()}",
    }
    return WebhookRequest(body=body, headers=headers)


def create_app(options: SimulatorOptions | None = None) -> web.Application:
    state = ResendState(options or SimulatorOptions())
    state.webhook_secret = (
        state.webhook_secret or f"whsec_{base64.b64encode(secrets.token_bytes(24)).decode()}"
    )
    return build_app(state, [web.post("/emails", send_email), web.post("/emails/batch", send_batch)])
