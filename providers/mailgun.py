"""Mailgun: `POST /v3/{domain}/messages`, HTTP Basic `api:<key>`, multipart form.

Messages with the same content, one `to` each and no cc/bcc, go out as one call using
`recipient-variables` (Mailgun then sends each `to` its own copy): our message id is a recipient
variable referenced as `%recipient.mailers_message_id%` in the `X-Mailers-Message-Id` header and the
`v:mailers_message_id` custom variable. Every other message is one call. Mailgun answers one id per
call (`<…@domain>`); it is returned without angle brackets, as it appears in Mailgun's events.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import ClassVar

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
from schemas.messages import OutboundMessage
from schemas.provider_configs import MailgunConfig as Config

MAX_RECIPIENTS_PER_CALL = 1000
_BATCH_ID = f"%recipient.{MESSAGE_ID_FIELD}%"


class _Accepted(msgspec.Struct):
    id: str
    message: str = ""


class _Error(msgspec.Struct):
    message: str = ""


_accepted_decoder = msgspec.json.Decoder(_Accepted)
_error_decoder = msgspec.json.Decoder(_Error)


def message_form(message: OutboundMessage, batch: Sequence[OutboundMessage] = ()) -> aiohttp.FormData:
    """The multipart form of one message, or of a recipient-variables batch sharing its content."""
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("from", message.from_.formatted())
    for address in [m.to[0] for m in batch] if batch else message.to:
        form.add_field("to", address.formatted())
    for field, addresses in (("cc", message.cc), ("bcc", message.bcc)):
        for address in addresses:
            form.add_field(field, address.formatted())
    form.add_field("subject", message.subject)
    _add_body_and_headers(form, message, _BATCH_ID if batch else message.id)
    for attachment in message.attachments:
        form.add_field(
            "inline" if attachment.content_id else "attachment",
            attachment.content,
            filename=attachment.filename,
            content_type=attachment.content_type,
        )
    if batch:
        variables = {m.to[0].email: {MESSAGE_ID_FIELD: m.id} for m in batch}
        form.add_field("recipient-variables", msgspec.json.encode(variables).decode())
    return form


def _add_body_and_headers(form: aiohttp.FormData, message: OutboundMessage, message_id: str) -> None:
    if message.text is not None:
        form.add_field("text", message.text)
    if message.html is not None:
        form.add_field("html", message.html)
    if message.reply_to:
        form.add_field("h:Reply-To", ", ".join(a.formatted() for a in message.reply_to))
    for name, value in message.headers.items():
        form.add_field(f"h:{name}", value)
    form.add_field(f"h:{MESSAGE_ID_HEADER}", message_id)
    for tag in message.tags:
        form.add_field("o:tag", tag)
    for key, value in message.metadata.items():
        form.add_field(f"v:{key}", value)
    form.add_field(f"v:{MESSAGE_ID_FIELD}", message_id)


def _batchable(message: OutboundMessage) -> bool:
    return len(message.to) == 1 and not message.cc and not message.bcc


def _read_failure(answer: HttpAnswer) -> Outcome:
    try:
        extracted: str | None = _error_decoder.decode(answer.body).message
    except msgspec.DecodeError:
        extracted = None
    return classify_failure(answer, error_text(answer, extracted), now=time.time())


class Adapter:
    name: ClassVar[str] = "mailgun"
    max_batch: ClassVar[int] = MAX_RECIPIENTS_PER_CALL

    def __init__(
        self, config: Config, *, http: aiohttp.ClientSession | None = None, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self._http = ProviderHttp(
            http, timeout=config.timeout_seconds, concurrency=config.concurrency, egress=egress
        )
        self._url = f"{config.base_url.rstrip('/')}/v3/{config.domain}/messages"
        credentials = base64.b64encode(f"api:{config.api_key}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        groups = identical_content_groups(
            messages,
            varying=("id", "to"),
            eligible=_batchable,
            limit=MAX_RECIPIENTS_PER_CALL,
            distinct=lambda m: m.to[0].email.lower(),
        )
        return await send_in_groups(messages, groups, self._send_group)

    async def _send_group(self, group: list[OutboundMessage]) -> list[Outcome]:
        form = message_form(group[0], group if len(group) > 1 else ())
        answer = await self._http.request("POST", self._url, data=form, headers=self._headers)
        return [_outcome(answer)] * len(group)

    async def close(self) -> None:
        await self._http.close()


def _outcome(answer: HttpAnswer | Transient) -> Outcome:
    if isinstance(answer, Transient):
        return answer
    if not answer.ok:
        return _read_failure(answer)
    try:
        accepted = _accepted_decoder.decode(answer.body)
    except msgspec.DecodeError:
        # Mailgun said 2xx: it took the message; retrying could send it twice.
        return Sent(provider_message_id="")
    return Sent(provider_message_id=accepted.id.strip("<>"))
