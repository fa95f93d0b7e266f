"""Amazon SES v2 `SendEmail` through aioboto3 (`sesv2`).

Messages with attachments or custom headers go as raw MIME (rendered by `providers.mime`), the rest
as simple content. The SES client is created once per adapter on first use and kept open until
`close()`. botocore's own retries are off: the Dispatcher decides about retries, and throttling must
reach it as `Throttled`. Tags and metadata become `EmailTags` (SES allows ASCII letters, digits, `_`
and `-` only; other pairs are left out), always with `mailers_message_id`, which SES echoes in every
event's `mail.tags`.

Egress (`providers.egress`): a custom `endpoint_url` is checked before every send (syntax, literal
IPs) and botocore's connections resolve through `GuardedResolver`; a server without access keys is
refused (Permanent, `server_credentials_required`) unless the operator allows the host's own AWS
credential chain, so a tenant cannot send through (or receive requests signed by) the operator's
account. Error texts from the endpoint are cleaned and length-capped.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from providers.base import Outcome, Permanent, Sent, Throttled, Transient
from providers.egress import STRICT, Egress, check_target_url, refused_at_send
from providers.http_errors import MESSAGE_ID_FIELD
from providers.mime import MimeError, format_address, render_mime
from providers.upstream_text import sanitised
from schemas.messages import OutboundMessage
from schemas.provider_configs import SesConfig as Config
from security.ssrf import ForbiddenUrl, GuardedResolver

_TAG_TEXT = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
THROTTLE_CODES = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "LimitExceededException"}
)
# The sending server itself cannot send: fail over at once rather than fail the message.
SERVER_DOWN_CODES = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "NotFoundException",
    }
)
# MessageRejected texts that blame the identity (unverified sender, sandbox account), not the message.
_IDENTITY_PROBLEM = re.compile(r"not verified|authority to send|sandbox", re.IGNORECASE)


def email_tags(message: OutboundMessage) -> list[dict[str, str]]:
    pairs = [(tag, "true") for tag in message.tags] + list(message.metadata.items())
    pairs.append((MESSAGE_ID_FIELD, message.id))
    return [{"Name": n, "Value": v} for n, v in pairs if _TAG_TEXT.match(n) and _TAG_TEXT.match(v)]


def needs_raw(message: OutboundMessage) -> bool:
    return bool(message.attachments or message.headers)


def send_email_request(message: OutboundMessage, config: Config) -> dict[str, Any]:
    """The keyword arguments of `sesv2.send_email` for one message."""
    destination = {
        key: [format_address(a) for a in addresses]
        for key, addresses in (
            ("ToAddresses", message.to),
            ("CcAddresses", message.cc),
            ("BccAddresses", message.bcc),
        )
        if addresses
    }
    request: dict[str, Any] = {
        "FromEmailAddress": format_address(message.from_),
        "Destination": destination,
        "EmailTags": email_tags(message),
    }
    if config.configuration_set:
        request["ConfigurationSetName"] = config.configuration_set
    if needs_raw(message):
        request["Content"] = {"Raw": {"Data": render_mime(message)}}
        return request
    if message.reply_to:
        request["ReplyToAddresses"] = [format_address(a) for a in message.reply_to]
    request["Content"] = {"Simple": {"Subject": _utf8(message.subject), "Body": _simple_body(message)}}
    return request


def _simple_body(message: OutboundMessage) -> dict[str, Any]:
    body = {}
    if message.text is not None:
        body["Text"] = _utf8(message.text)
    if message.html is not None:
        body["Html"] = _utf8(message.html)
    return body


def _utf8(text: str) -> dict[str, str]:
    return {"Data": text, "Charset": "UTF-8"}


def classify_ses_error(exc: BaseException, config: Config) -> Outcome:
    """The one place SES/botocore failures become outcomes."""
    if not isinstance(exc, ClientError):
        return Transient(sanitised(f"{type(exc).__name__}: {exc}"))
    error = exc.response.get("Error", {})
    code, text = sanitised(str(error.get("Code", "Unknown")), 64), sanitised(str(error.get("Message", "")))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
    reason = f"SES {code}: {text}"
    if code in THROTTLE_CODES or status == 429:
        daily = "daily" in text.lower()
        wait = config.daily_quota_retry_seconds if daily else config.throttle_retry_seconds
        return Throttled(retry_after=wait, reason=reason)
    if code in SERVER_DOWN_CODES or status in (401, 403):
        return Transient(reason, server_down=True)
    if code == "MessageRejected" and _IDENTITY_PROBLEM.search(text):
        return Transient(reason, server_down=True)
    if status >= 500:
        return Transient(reason)
    return Permanent(reason, code=code)


class Adapter:
    name: ClassVar[str] = "amazon-ses"
    max_batch: ClassVar[int] = 100

    def __init__(
        self, config: Config, *, http: aiohttp.ClientSession | None = None, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self.egress = egress
        self._session = aioboto3.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            aws_session_token=config.session_token,
            region_name=config.region,
        )
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._opening = asyncio.Lock()
        self._slots = asyncio.Semaphore(max(1, config.concurrency))

    async def _ses(self) -> Any:
        async with self._opening:
            if self._client is None:
                stack = AsyncExitStack()
                self._client = await stack.enter_async_context(
                    self._session.client(
                        "sesv2", endpoint_url=self.config.endpoint_url, config=self._botocore_config()
                    )
                )
                self._stack = stack
            return self._client

    def _botocore_config(self) -> AioConfig:
        timeout = self.config.timeout_seconds
        return AioConfig(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=max(1, self.config.concurrency),
            connector_args={"resolver": GuardedResolver(allow_private=self.egress.allow_private_targets)},
        )

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, message: OutboundMessage) -> Outcome:
        try:
            request = send_email_request(message, self.config)
        except MimeError as exc:
            return Permanent(f"cannot render message: {exc}", code="invalid_message")
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        async with self._slots:
            try:
                answer = await (await self._ses()).send_email(**request)
            except ForbiddenUrl as exc:
                return refused_at_send(exc)
            except (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
                cause = getattr(exc, "kwargs", {}).get("error")  # botocore wraps the resolver's refusal
                if isinstance(cause, ForbiddenUrl):
                    return refused_at_send(cause)
                return classify_ses_error(exc, self.config)
        return Sent(provider_message_id=answer["MessageId"])

    def _refusal(self) -> Outcome | None:
        """The operator's rules, checked before every send (settings may have changed since save)."""
        if self.config.uses_ambient_credentials() and not self.egress.allow_ambient_aws_credentials:
            return Permanent(
                "this server has no credentials of its own and the operator does not lend the host's",
                code="server_credentials_required",
            )
        if self.config.endpoint_url:
            try:
                check_target_url(self.config.endpoint_url, self.egress)
            except ForbiddenUrl as exc:
                return refused_at_send(exc)
        return None

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
