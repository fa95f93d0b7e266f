"""Any SMTP relay: pooled aiosmtplib connections, pre-rendered (and DKIM-signed) MIME, reply classification.

Reply classification (`classify_smtp_reply`, `recipient_refusal`), RFC 5321 codes and RFC 3463 enhanced
status codes:
  2xx/3xx                       accepted
  421 450 451 452 (any 4xx)     Transient, with retry_after (greylisting, busy, closing)
  530 534 535 538               Transient(server_down=True): our credentials, not the message
  other 5xx                     Permanent for the message
Per recipient, a 5xx is a hard bounce (suppressed) when it says the address is bad: enhanced 5.1.x or
5.2.1 (disabled), or 550/551/553 without a more precise enhanced code; anything else (552 / 5.2.2
mailbox full, 5.7.x policy, 4xx) is soft. Every recipient refused: Permanent with `bounced` when all
refusals are 5xx, else Transient; some refused: Sent with `refused`.

Where: the pool connects to the address `security.ssrf.pinned_address` checked (loopback and private
addresses only when the operator allows private targets), with the configured host name kept for TLS
(SNI and certificate checks), so a name that resolves differently at connection time (DNS rebinding)
cannot lead it into the operator's network. Reply texts in reasons are cleaned and length-capped.

Connections: one pool per adapter (one per sending server), at most `pool_size` open; idle connections
are reused, checked with NOOP when idle longer than `IDLE_CHECK_SECONDS`, and dropped when the server
closed them or a transaction failed in a way that leaves the session unknown. After a failed reply
aiosmtplib's `sendmail` has already sent RSET, so the connection goes back to the pool. A reused
connection that turns out to be dead is replaced and the message tried once more on the fresh one; the
duplicate risk of that retry is the one any Transient retry carries, no more.

DKIM: a message is signed by the key `signer_for(from_domain)` gives (the Dispatcher passes the
workspace's verified sending domains, `actors.dispatch.signing.signing_key_for`), else by the key in
the config (`dkim_*`), else not at all. A lookup that fails leaves the message unsent (Transient): sending it
unsigned could fail DMARC for a domain that publishes a DKIM key.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import aiosmtplib
from aiosmtplib import SMTPResponse

from providers.base import Outcome, Permanent, RecipientRefusal, Sent, Transient
from providers.dkim import DkimKeyError, DkimSigner
from providers.egress import STRICT, Egress, refused_at_send
from providers.mime import MimeError, ascii_email, message_id_header, render_mime
from providers.upstream_text import sanitised
from schemas.messages import OutboundMessage
from schemas.provider_configs import SmtpConfig as Config
from security.ssrf import ForbiddenUrl, pinned_address

IDLE_CHECK_SECONDS = 10.0
CONNECT_FAILURE_HOLD_SECONDS = 2.0
AUTH_CODES = frozenset({530, 534, 535, 538})
RETRY_AFTER = {421: 60.0, 450: 300.0, 451: 120.0, 452: 300.0}
DEFAULT_RETRY_AFTER = 60.0
HARD_CODES = frozenset({550, 551, 553})
_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
SignerLookup = Callable[[str], Awaitable[DkimSigner | None]]


# --- reply classification ----------------------------------------------------------------------


def enhanced_status(message: str) -> str | None:
    match = _ENHANCED.match(message)
    return ".".join(match.groups()) if match else None


def classify_smtp_reply(code: int, message: str) -> Outcome:
    """The outcome of a whole message given one SMTP reply (to MAIL, DATA, AUTH, or the greeting).
    A success reply gives `Sent` with an empty id: the caller knows the Message-ID."""
    text = sanitised(f"{code} {message}".strip())
    if code < 400:
        return Sent(provider_message_id="")
    if code < 500:
        return Transient(f"SMTP {text}", retry_after=RETRY_AFTER.get(code, DEFAULT_RETRY_AFTER))
    if code in AUTH_CODES:
        return Transient(f"SMTP authentication failed: {text}", server_down=True)
    return Permanent(f"SMTP {text}", code=str(code))


def is_hard_bounce(code: int, message: str) -> bool:
    if code < 500:
        return False
    enhanced = enhanced_status(message)
    if enhanced is None or enhanced in ("5.0.0", "5.0.1"):
        return code in HARD_CODES
    return enhanced.startswith("5.1.") or enhanced == "5.2.1"


def recipient_refusal(email: str, code: int, message: str) -> RecipientRefusal:
    return RecipientRefusal(
        email=email, code=str(code), diagnostic=sanitised(message), hard=is_hard_bounce(code, message)
    )


def classify_refusals(refusals: Sequence[RecipientRefusal]) -> Outcome:
    """Every recipient was refused: Permanent when all refusals are final (5xx), else Transient."""
    temporary = [r for r in refusals if int(r.code) < 500]
    if temporary:
        first = temporary[0]
        return Transient(
            f"SMTP {first.code} {first.diagnostic} ({len(temporary)} recipients deferred)",
            retry_after=RETRY_AFTER.get(int(first.code), DEFAULT_RETRY_AFTER),
        )
    reasons = "; ".join(f"{r.email}: {r.code} {r.diagnostic}" for r in refusals)
    return Permanent(f"every recipient refused: {reasons}", code=refusals[0].code, bounced=list(refusals))


def classify_failure(exc: BaseException, originals: dict[str, str]) -> Outcome:
    """The one place aiosmtplib and socket errors become outcomes. `originals`: envelope -> our address."""
    if isinstance(exc, ForbiddenUrl):
        return refused_at_send(exc)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return classify_refusals(
            [
                recipient_refusal(originals.get(r.recipient, r.recipient), r.code, r.message)
                for r in exc.recipients
            ]
        )
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError) and exc.code >= 500:
        # refused at the greeting or EHLO: the server will not talk to us, whatever the message
        return Transient(
            f"SMTP server refused the session: {exc.code} {sanitised(exc.message)}", server_down=True
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_smtp_reply(exc.code, exc.message)
    # aiosmtplib raises the bare base class for a missing STARTTLS or AUTH: setup, like a bad certificate.
    if type(exc) is aiosmtplib.SMTPException or isinstance(exc, aiosmtplib.SMTPNotSupported | ssl.SSLError):
        return Transient(sanitised(f"SMTP server setup: {exc}"), server_down=True)
    if isinstance(exc, TimeoutError):
        return Transient(sanitised(f"SMTP timeout: {exc}"))
    return Transient(sanitised(f"SMTP connection failed: {type(exc).__name__}: {exc}"))


FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError, ForbiddenUrl)


# --- connections --------------------------------------------------------------------------------


class SmtpConnectionPool:
    """At most `config.pool_size` connections to one server; idle ones are reused, most recent first."""

    def __init__(
        self, config: Config, *, idle_check_seconds: float = IDLE_CHECK_SECONDS, egress: Egress = STRICT
    ) -> None:
        self.config = config
        self.egress = egress
        self.idle_check_seconds = idle_check_seconds
        self.connections_opened = 0
        self._slots = asyncio.Semaphore(config.pool_size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._connect_failure: tuple[float, BaseException] | None = None
        self._closed = False

    async def sendmail(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, SMTPResponse]:
        """Refused recipients (the rest accepted); raises aiosmtplib/socket errors as they come."""
        async with self._slots:
            smtp, reused = await self._checkout()
            try:
                return await self._transaction(smtp, sender, recipients, raw)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not reused:
                    raise
            smtp, _ = await self._checkout(fresh=True)
            return await self._transaction(smtp, sender, recipients, raw)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(smtp) for smtp, _ in idle))

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], raw: bytes
    ) -> dict[str, SMTPResponse]:
        try:
            refused, _ = await smtp.sendmail(sender, recipients, raw)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            # sendmail has reset the envelope (RSET): the session is usable unless the server is leaving.
            closing = isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421
            self._checkin(smtp, reusable=not closing)
            raise
        except BaseException:
            smtp.close()
            raise
        self._checkin(smtp, reusable=True)
        return refused

    async def _checkout(self, *, fresh: bool = False) -> tuple[aiosmtplib.SMTP, bool]:
        while self._idle and not fresh:
            smtp, last_used = self._idle.pop()
            if await self._alive(smtp, last_used):
                return smtp, True
        return await self._open(), False

    def _checkin(self, smtp: aiosmtplib.SMTP, *, reusable: bool) -> None:
        if reusable and smtp.is_connected and not self._closed:
            self._idle.append((smtp, time.monotonic()))
        else:
            smtp.close()

    async def _alive(self, smtp: aiosmtplib.SMTP, last_used: float) -> bool:
        if not smtp.is_connected:
            smtp.close()
            return False
        if time.monotonic() - last_used < self.idle_check_seconds:
            return True
        try:
            await smtp.noop()
        except FAILURES:
            smtp.close()
            return False
        return True

    async def _open(self) -> aiosmtplib.SMTP:
        # A server that just refused us is not asked again by every queued message.
        if (
            self._connect_failure
            and time.monotonic() - self._connect_failure[0] < CONNECT_FAILURE_HOLD_SECONDS
        ):
            raise self._connect_failure[1]
        sock: socket.socket | None = None
        smtp: aiosmtplib.SMTP | None = None
        try:
            sock = await self._pinned_socket()
            smtp = aiosmtplib.SMTP(sock=sock, **self._client_arguments())
            await smtp.connect()
        except BaseException as exc:
            if smtp is not None:
                smtp.close()
            if sock is not None:
                sock.close()
            if isinstance(exc, FAILURES):
                self._connect_failure = (time.monotonic(), exc)
            raise
        self._connect_failure = None
        self.connections_opened += 1
        return smtp

    async def _pinned_socket(self) -> socket.socket:
        """A socket connected to the checked address: aiosmtplib itself would resolve the name again."""
        config = self.config
        address = await pinned_address(
            config.host, config.port, allow_private=self.egress.allow_private_targets
        )
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(config.timeout):
                await asyncio.get_running_loop().sock_connect(sock, (address, config.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _client_arguments(self) -> dict[str, Any]:
        config = self.config
        return {
            "hostname": config.host,  # with `sock`: the name TLS checks the certificate against
            "username": config.username,
            "password": config.password,
            "local_hostname": config.helo_name,
            "timeout": config.timeout,
            "use_tls": config.security == "tls",
            "start_tls": config.security == "starttls",
            "validate_certs": config.validate_certs,
        }

    @staticmethod
    async def _quit(smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.quit(timeout=2.0)
        except FAILURES:
            smtp.close()


# --- the adapter --------------------------------------------------------------------------------


class Adapter:
    name: ClassVar[str] = "smtp"
    max_batch: ClassVar[int] = 100

    def __init__(
        self,
        config: Config,
        *,
        http: object = None,
        signer_for: SignerLookup | None = None,
        egress: Egress = STRICT,
    ) -> None:
        self.config = config
        self.pool = SmtpConnectionPool(config, egress=egress)
        self.signer = _signer(config)
        self.signer_for = signer_for
        # Rendering happens inside the slot too, so it interleaves with other messages' network waits
        # instead of a whole batch rendering up front.
        self._slots = asyncio.Semaphore(config.pool_size)

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[Outcome]:
        """One outcome per message, in order; `pool_size` messages in flight."""
        return list(await asyncio.gather(*(self.send(message) for message in messages)))

    async def send(self, message: OutboundMessage) -> Outcome:
        async with self._slots:
            return await self._send(message)

    async def _send(self, message: OutboundMessage) -> Outcome:
        try:
            signer = await self._signer_for(message)
        except Exception as exc:  # the key store (Redis) failed: nothing was sent
            return Transient(f"DKIM key lookup failed: {type(exc).__name__}: {exc}")
        try:
            originals = {ascii_email(a.email): a.email for a in message.recipients}
            sender = ascii_email(message.from_.email)
            raw = render_mime(message, dkim=signer)
        except MimeError as exc:
            return Permanent(f"message cannot be sent as it is: {exc}", code="invalid_message")
        try:
            refused = await self.pool.sendmail(sender, list(originals), raw)
        except FAILURES as exc:
            return classify_failure(exc, originals)
        except ValueError as exc:  # aiosmtplib's own address check
            return Permanent(f"address rejected before sending: {exc}", code="invalid_address")
        return Sent(
            provider_message_id=message_id_header(message),
            refused=[
                recipient_refusal(originals.get(r, r), reply.code, reply.message)
                for r, reply in refused.items()
            ],
        )

    async def _signer_for(self, message: OutboundMessage) -> DkimSigner | None:
        found = await self.signer_for(message.from_.domain) if self.signer_for is not None else None
        return found or self.signer

    async def close(self) -> None:
        await self.pool.close()


def _signer(config: Config) -> DkimSigner | None:
    if not (config.dkim_domain and config.dkim_selector and config.dkim_private_key):
        return None
    try:
        return DkimSigner(config.dkim_domain, config.dkim_selector, config.dkim_private_key)
    except DkimKeyError as exc:
        raise ValueError(f"invalid SMTP server config: {exc}") from None
