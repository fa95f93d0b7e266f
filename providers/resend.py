"""Resend: `POST /emails` and `POST /emails/batch` (≤ 100), `Authorization: Bearer re_…`, JSON.

Every request carries an `Idempotency-Key`: our message id for a single send, and a digest of the
ids for a batch, so a retry after a lost answer never sends twice. Resend's batch endpoint takes no
attachments, so messages with attachments go one by one. Tags and metadata become Resend tags
(`{"name","value"}`, ASCII letters, digits, `_` and `-` only): a tag `t` as `{"name": t, "value":
"true"}`, metadata as its key/value, plus `mailers_message_id`; pairs Resend would refuse are left
out (our own record keeps them). The id also travels as the `X-Mailers-Message-Id` header.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from providers.base import Outcome, Permanent, Sent, Transient
from providers.egress import STRICT, Egress
from providers.http_errors import (
    MESSAGE_ID_FIELD,
    MESSAGE_ID_HEADER,
    HttpAnswer,
    ProviderHttp,
    chunked,
    classify_failure,
    error_text,
    send_in_groups,
)
from schemas.messages import Attachment, OutboundMessage
from schemas.provider_configs import ResendConfig as Config

MAX_BATCH = 100
_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class _Accepted(msgspec.Struct):
    id: str


class _BatchAccepted(msgspec.Struct):
    data: list[_Accepted]


class _Error(msgspec.Struct):
    message: str = ""
    name: str | None = None


_accepted_decoder = msgspec.json.Decoder(_Accepted)
_batch_decoder = msgspec.json.Decoder(_BatchAccepted)
_error_decoder = msgspec.json.Decoder(_Error)


def tag_pairs(message: OutboundMessage) -> list[dict[str, str]]:
    pairs = [(tag, "true") for tag in message.tags] + list(message.metadata.items())
    pairs.append((MESSAGE_ID_FIELD, message.id))
    return [
        {"name": name, "value": value}
        for name, value in pairs
        if _TAG_TEXT.match(name) and _TAG_TEXT.match(value)
    ]


def email_body(message: OutboundMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": message.from_.formatted(),
        "to": [a.formatted() for a in message.to],
        "subject": message.subject,
        "headers": {**message.headers, MESSAGE_ID_HEADER: message.id},
        "tags": tag_pairs(message),
    }
    for field, addresses in (("cc", message.cc), ("bcc", message.bcc), ("reply_to", message.reply_to)):
        if addresses:
            body[field] = [a.formatted() for a in addresses]
    if message.html is not None:
        body["html"] = message.html
    if message.text is not None:
        body["text"] = message.text
    if message.attachments:
        body["attachments"] = [_attachment(a) for a in message.attachments]
    return body


def _attachment(attachment: Attachment) -> dict[str, str]:
    entry = {
        "filename": attachment.filename,
        "content": base64.b64encode(attachment.content).decode(),
        "content_type": attachment.content_type,
    }
    if attachment.content_id:
        entry["content_id"] = attachment.content_id
    return entry


def batch_idempotency_key(messages: Sequence[OutboundMessage]) -> str:
    digest = hashlib.sha256("\n".join(m.id for m in messages).encode()).hexdigest()
    return f"batch/{digest}"


def request_groups(messages: Sequence[OutboundMessage]) -> list[list[int]]:
    """Single requests for messages with attachments, batches of ≤ 100 for the rest."""
    alone = [[i] for i, m in enumerate(messages) if m.attachments]
    batchable = [i for i, m in enumerate(messages) if not m.attachments]
    return alone + chunked(batchable, MAX_BATCH)


def _read_failure(answer: HttpAnswer) -> Outcome:
    try:
        error = _error_decoder.decode(answer.body)
        extracted, code = error.message, error.name
    except msgspec.DecodeError:
        extracted, code = None, None
    reason = error_text(answer, extracted)
    if code == "invalid_idempotent_request":
        return Permanent(f"HTTP {answer.status}: {reason}", code=code)
    return classify_failure(answer, reason, now=time.time(), code=code)


class Adapter:
    name: ClassVar[str] = "resend"
    max_batch: ClassVar[int] = MAX_BATCH

    def __init__(
        self, config: Config, *, http: aiohttp.ClientSession | None = None, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self._http = ProviderHttp(
            http, timeout=config.timeout_seconds, concurrency=config.concurrency, egress=egress
        )
        self._base = config.base_url.rstrip("/")
        self._auth = f"Bearer {config.api_key}"

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        return await send_in_groups(messages, request_groups(messages), self._send_group)

    async def _send_group(self, group: list[OutboundMessage]) -> list[Outcome]:
        if len(group) == 1:
            return [await self._send_one(group[0])]
        answer = await self._post(
            "/emails/batch", [email_body(m) for m in group], batch_idempotency_key(group)
        )
        if isinstance(answer, Transient):
            return [answer] * len(group)
        if not answer.ok:
            return [_read_failure(answer)] * len(group)
        try:
            ids = [item.id for item in _batch_decoder.decode(answer.body).data]
        except msgspec.DecodeError:
            ids = []
        # A 2xx means Resend took the batch; a short id list still must not cause a resend.
        return [Sent(provider_message_id=ids[i] if i < len(ids) else "") for i in range(len(group))]

    async def _send_one(self, message: OutboundMessage) -> Outcome:
        answer = await self._post("/emails", email_body(message), message.id)
        if isinstance(answer, Transient):
            return answer
        if not answer.ok:
            return _read_failure(answer)
        try:
            return Sent(provider_message_id=_accepted_decoder.decode(answer.body).id)
        except msgspec.DecodeError:
            return Sent(provider_message_id="")

    async def _post(self, path: str, body: Any, idempotency_key: str) -> HttpAnswer | Transient:
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        return await self._http.request(
            "POST", self._base + path, data=msgspec.json.encode(body), headers=headers
        )

    async def close(self) -> None:
        await self._http.close()
