"""SendGrid v3: `POST /v3/mail/send`, `Authorization: Bearer <key>`, JSON; answers 202 + `X-Message-Id`.

Messages that differ only in recipients and metadata share one request, one personalization each
(≤ 1,000 recipients per request); our message id rides in each personalization's `headers`
(`X-Mailers-Message-Id`) and `custom_args` (`mailers_message_id`, echoed in every event), next to
the message's metadata. Tags become `categories`. Everything else is one request per message.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from providers.base import Outcome, Sent, Transient
from providers.egress import STRICT, Egress
from providers.http_errors import (
    MESSAGE_ID_FIELD,
    MESSAGE_ID_HEADER,
    HttpAnswer,
    ProviderHttp,
    classify_failure,
    error_text,
    identical_content_groups,
    send_in_groups,
)
from schemas.messages import Address, Attachment, OutboundMessage
from schemas.provider_configs import SendgridConfig as Config

MAX_RECIPIENTS_PER_REQUEST = 1000


class _ErrorItem(msgspec.Struct):
    message: str = ""
    field: str | None = None


class _Errors(msgspec.Struct):
    errors: list[_ErrorItem] = []


_errors_decoder = msgspec.json.Decoder(_Errors)


def _address(address: Address) -> dict[str, str]:
    return {"email": address.email, "name": address.name} if address.name else {"email": address.email}


def _personalization(message: OutboundMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"to": [_address(a) for a in message.to]}
    if message.cc:
        entry["cc"] = [_address(a) for a in message.cc]
    if message.bcc:
        entry["bcc"] = [_address(a) for a in message.bcc]
    entry["headers"] = {MESSAGE_ID_HEADER: message.id}
    entry["custom_args"] = {**message.metadata, MESSAGE_ID_FIELD: message.id}
    return entry


def mail_send_body(group: Sequence[OutboundMessage]) -> dict[str, Any]:
    """The v3 mail/send body for messages sharing content (one personalization per message)."""
    first = group[0]
    body: dict[str, Any] = {
        "personalizations": [_personalization(m) for m in group],
        "from": _address(first.from_),
        "subject": first.subject,
        "content": _content(first),
    }
    if len(first.reply_to) == 1:
        body["reply_to"] = _address(first.reply_to[0])
    elif first.reply_to:
        body["reply_to_list"] = [_address(a) for a in first.reply_to]
    if first.headers:
        body["headers"] = dict(first.headers)
    if first.tags:
        body["categories"] = list(first.tags)
    if first.attachments:
        body["attachments"] = [_attachment(a) for a in first.attachments]
    return body


def _content(message: OutboundMessage) -> list[dict[str, str]]:
    # SendGrid requires text/plain before text/html.
    content = []
    if message.text is not None:
        content.append({"type": "text/plain", "value": message.text})
    if message.html is not None:
        content.append({"type": "text/html", "value": message.html})
    return content


def _attachment(attachment: Attachment) -> dict[str, str]:
    entry = {
        "content": base64.b64encode(attachment.content).decode(),
        "filename": attachment.filename,
        "type": attachment.content_type,
        "disposition": "inline" if attachment.content_id else "attachment",
    }
    if attachment.content_id:
        entry["content_id"] = attachment.content_id
    return entry


def request_groups(messages: Sequence[OutboundMessage]) -> list[list[int]]:
    groups = identical_content_groups(
        messages,
        varying=("id", "to", "cc", "bcc", "metadata"),
        eligible=lambda m: True,
        limit=MAX_RECIPIENTS_PER_REQUEST,
    )
    return [part for group in groups for part in _split_by_recipients(messages, group)]


def _split_by_recipients(messages: Sequence[OutboundMessage], group: list[int]) -> list[list[int]]:
    parts: list[list[int]] = [[]]
    count = 0
    for index in group:
        size = len(messages[index].recipients)
        if parts[-1] and count + size > MAX_RECIPIENTS_PER_REQUEST:
            parts.append([])
            count = 0
        parts[-1].append(index)
        count += size
    return parts


def _read_failure(answer: HttpAnswer) -> Outcome:
    try:
        errors = _errors_decoder.decode(answer.body).errors
        extracted: str | None = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    except msgspec.DecodeError:
        extracted = None
    return classify_failure(answer, error_text(answer, extracted), now=time.time())


def _outcome(answer: HttpAnswer | Transient) -> Outcome:
    if isinstance(answer, Transient):
        return answer
    if not answer.ok:
        return _read_failure(answer)
    return Sent(provider_message_id=answer.headers.get("X-Message-Id", ""))


class Adapter:
    name: ClassVar[str] = "sendgrid"
    max_batch: ClassVar[int] = MAX_RECIPIENTS_PER_REQUEST

    def __init__(
        self, config: Config, *, http: aiohttp.ClientSession | None = None, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self._http = ProviderHttp(
            http, timeout=config.timeout_seconds, concurrency=config.concurrency, egress=egress
        )
        self._url = f"{config.base_url.rstrip('/')}/v3/mail/send"
        self._headers = {"Authorization": f"Bearer {config.api_key}"}

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        return await send_in_groups(messages, request_groups(messages), self._send_group)

    async def _send_group(self, group: list[OutboundMessage]) -> list[Outcome]:
        body = msgspec.json.encode(mail_send_body(group))
        headers = {**self._headers, "Content-Type": "application/json"}
        answer = await self._http.request("POST", self._url, data=body, headers=headers)
        return [_outcome(answer)] * len(group)

    async def close(self) -> None:
        await self._http.close()
