"""Postmark: `POST /email` and `POST /email/batch` (≤ 500), header `X-Postmark-Server-Token`, JSON.

A batch answers 200 with one result per message (`ErrorCode` 0 = accepted), so each message gets
its own outcome. Postmark keeps one `Tag` per message: the first of ours. Metadata travels as
`Metadata` with `mailers_message_id` added; the id is also the `X-Mailers-Message-Id` header.
Error codes that mean the server itself cannot send (bad token, unconfirmed sender signature,
account pending or out of credits) mark the server down instead of failing the message.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from providers.base import Outcome, Permanent, RecipientRefusal, Sent, Transient
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
from providers.upstream_text import sanitised
from schemas.messages import Attachment, OutboundMessage
from schemas.provider_configs import PostmarkConfig as Config

MAX_BATCH = 500
# 10 bad token, 400 sender signature not found, 401 not confirmed, 405 no credits,
# 412 account pending approval, 413 recipient not allowed while pending.
SERVER_DOWN_CODES = frozenset({10, 400, 401, 405, 412, 413})
INACTIVE_RECIPIENT = 406


class _Result(msgspec.Struct):
    ErrorCode: int = 0
    Message: str = ""
    MessageID: str | None = None
    To: str | None = None


_result_decoder = msgspec.json.Decoder(_Result)
_batch_decoder = msgspec.json.Decoder(list[_Result])


def email_body(message: OutboundMessage, config: Config) -> dict[str, Any]:
    body: dict[str, Any] = {"From": message.from_.formatted(), "To": _joined(message.to)}
    for field, addresses in (("Cc", message.cc), ("Bcc", message.bcc), ("ReplyTo", message.reply_to)):
        if addresses:
            body[field] = _joined(addresses)
    body["Subject"] = message.subject
    if message.html is not None:
        body["HtmlBody"] = message.html
    if message.text is not None:
        body["TextBody"] = message.text
    headers = {**message.headers, MESSAGE_ID_HEADER: message.id}
    body["Headers"] = [{"Name": name, "Value": value} for name, value in headers.items()]
    if message.tags:
        body["Tag"] = message.tags[0]
    body["Metadata"] = {**message.metadata, MESSAGE_ID_FIELD: message.id}
    if message.attachments:
        body["Attachments"] = [_attachment(a) for a in message.attachments]
    body["MessageStream"] = config.message_stream
    if config.track_opens is not None:
        body["TrackOpens"] = config.track_opens
    if config.track_links is not None:
        body["TrackLinks"] = config.track_links
    return body


def _joined(addresses: Sequence[Any]) -> str:
    return ", ".join(a.formatted() for a in addresses)


def _attachment(attachment: Attachment) -> dict[str, str]:
    entry = {
        "Name": attachment.filename,
        "Content": base64.b64encode(attachment.content).decode(),
        "ContentType": attachment.content_type,
    }
    if attachment.content_id:
        entry["ContentID"] = f"cid:{attachment.content_id}"
    return entry


def result_outcome(result: _Result, message: OutboundMessage) -> Outcome:
    """The outcome of one Postmark result object (a single send's body or one batch entry)."""
    if result.ErrorCode == 0:
        return Sent(provider_message_id=result.MessageID or "")
    reason = f"Postmark {result.ErrorCode}: {sanitised(result.Message)}"
    if result.ErrorCode in SERVER_DOWN_CODES:
        return Transient(reason, server_down=True)
    if result.ErrorCode == INACTIVE_RECIPIENT:
        return Permanent(reason, code=str(result.ErrorCode), bounced=_inactive(result.Message, message))
    return Permanent(reason, code=str(result.ErrorCode))


def _inactive(text: str, message: OutboundMessage) -> list[RecipientRefusal]:
    lowered = text.lower()
    named = [a for a in message.recipients if a.email.lower() in lowered]
    return [RecipientRefusal(email=a.email, code="406", diagnostic=text) for a in named]


def _failure(answer: HttpAnswer, message: OutboundMessage) -> Outcome:
    try:
        result = _result_decoder.decode(answer.body)
    except msgspec.DecodeError:
        return classify_failure(answer, error_text(answer, None), now=time.time())
    if answer.status == 422 and result.ErrorCode:
        return result_outcome(result, message)
    return classify_failure(
        answer,
        error_text(answer, result.Message),
        now=time.time(),
        code=str(result.ErrorCode or answer.status),
    )


class Adapter:
    name: ClassVar[str] = "postmark"
    max_batch: ClassVar[int] = MAX_BATCH

    def __init__(
        self, config: Config, *, http: aiohttp.ClientSession | None = None, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self._http = ProviderHttp(
            http, timeout=config.timeout_seconds, concurrency=config.concurrency, egress=egress
        )
        self._base = config.base_url.rstrip("/")
        self._headers = {
            "X-Postmark-Server-Token": config.server_token,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        return await send_in_groups(messages, chunked(range(len(messages)), MAX_BATCH), self._send_group)

    async def _send_group(self, group: list[OutboundMessage]) -> list[Outcome]:
        if len(group) == 1:
            return [await self._send_one(group[0])]
        answer = await self._post("/email/batch", [email_body(m, self.config) for m in group])
        if isinstance(answer, Transient):
            return [answer] * len(group)
        if not answer.ok:
            return [_failure(answer, m) for m in group]
        try:
            results = _batch_decoder.decode(answer.body)
        except msgspec.DecodeError:
            results = []
        if len(results) != len(group):
            return [Sent(provider_message_id="")] * len(group)  # 200 = taken; never resend
        return [result_outcome(r, m) for r, m in zip(results, group, strict=True)]

    async def _send_one(self, message: OutboundMessage) -> Outcome:
        answer = await self._post("/email", email_body(message, self.config))
        if isinstance(answer, Transient):
            return answer
        if not answer.ok:
            return _failure(answer, message)
        try:
            return result_outcome(_result_decoder.decode(answer.body), message)
        except msgspec.DecodeError:
            return Sent(provider_message_id="")

    async def _post(self, path: str, body: Any) -> HttpAnswer | Transient:
        return await self._http.request(
            "POST", self._base + path, data=msgspec.json.encode(body), headers=self._headers
        )

    async def close(self) -> None:
        await self._http.close()
