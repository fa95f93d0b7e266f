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
closed them or a transaction failed in a way that leaves the session unknown. aiosmtplib sets a
connection up (greeting, EHLO once, STARTTLS or TLS, AUTH); then `SmtpSession` takes its transport and
runs the transactions: prepared MAIL/RCPT/DATA bytes, pipelined when the server advertises PIPELINING
(RFC 2920), the rendered MIME sent as it is (dot-stuffed only). After a refused envelope or DATA the
session sends RSET, so the connection goes back to the pool; no RSET or NOOP between good messages. A reused
connection that turns out to be dead is replaced and the message tried once more on the fresh one; the
duplicate risk of that retry is the one any Transient retry carries, no more.

DKIM: a message is signed by the key `signer_for(from_domain)` gives (the Dispatcher passes the
workspace's verified sending domains, `actors.dispatch.signing.signing_key_for`), else by the key in
the config (`dkim_*`), else not at all. A lookup that fails leaves the message unsent (Transient): sending it
unsigned could fail DMARC for a domain that publishes a DKIM key.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import quote_address

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


# --- one connection's transactions -------------------------------------------------------------

# The common address (no quoting, no spaces, no brackets): taken as it is. Anything else goes through
# aiosmtplib's own parse and check, as it did before (`quote_address`: email.utils, refuses characters
# that cannot go on a command line).
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+@[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]+\Z")
_COMMAND_BREAKING = re.compile(r"[\x00-\x1f\x7f]")
MAX_REPLY_BYTES = 32 * 1024  # one reply, continuation lines included (aiosmtplib's bound too)
MAX_REPLY_LINE = 8192
# The message data is written this much at a time, each piece only while the transport takes more (see
# `SmtpSession.pause_writing`): what a slow or stalled server leaves in our buffer is bounded by the
# transport's high-water mark (64 KiB by default) plus one piece, never whole messages.
DATA_CHUNK = 64 * 1024
READ_TIMED_OUT = "Timed out waiting for server response"
DRAIN_TIMED_OUT = "Timed out waiting for the server to read the message data"


def envelope_address(address: str) -> bytes:
    """`<address>` for MAIL/RCPT; refuses what could break the command line (ValueError)."""
    if _PLAIN_ADDRESS.match(address) and address.isascii():
        return b"<" + address.encode("ascii") + b">"
    if _COMMAND_BREAKING.search(address):
        raise ValueError(f"control character in envelope address: {address!r}")
    try:
        return quote_address(address).encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not an ASCII envelope address: {address!r}") from None


def data_payload(raw: bytes) -> bytes:
    """The DATA section for a rendered message: CRLF lines (bare CR or LF become CRLF, as aiosmtplib
    does), dot-stuffed (RFC 5321 4.5.2), ending with the CRLF . CRLF terminator. A message rendered by
    `providers.mime` already has CRLF line endings, so only the C-speed counts and replace run."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        from aiosmtplib.protocol import normalize_message_line_endings

        raw = normalize_message_line_endings(raw)
    elif not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    if raw.startswith(b"."):
        raw = b"." + raw
    return raw.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class Transaction:
    """A message's SMTP transaction prepared once, before a connection is taken (a bad address never
    costs a connection) and reused as it is if the message is tried again on a fresh one."""

    __slots__ = ("sender", "recipients", "mail_from", "rcpt_to", "payload", "size")

    def __init__(self, sender: str, recipients: list[str], raw: bytes) -> None:
        self.sender, self.recipients = sender, recipients
        self.mail_from = b"MAIL FROM:" + envelope_address(sender)
        self.rcpt_to = [b"RCPT TO:" + envelope_address(r) + b"\r\n" for r in recipients]
        self.payload = data_payload(raw)
        self.size = len(self.payload) - 3  # as sent, without the terminating "."


class SmtpSession(asyncio.Protocol):
    """One SMTP connection after its setup (greeting, EHLO, STARTTLS, AUTH: done by aiosmtplib, whose
    transport this protocol takes over): mail transactions written as prepared bytes and replies
    parsed straight from the socket's data, without aiosmtplib's per-message address parsing, message
    re-encoding and per-command lock and `wait_for`. With PIPELINING (RFC 2920) advertised, MAIL, every
    RCPT and DATA go in one write and their replies are read together: two round trips a message
    instead of 3 + recipients. The message data is paced by the transport's flow control
    (`pause_writing` / `resume_writing`, what `asyncio.StreamWriter.drain` waits on), each wait at most
    `timeout`. Errors are aiosmtplib's exception types, so `classify_failure` reads them as before."""

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        pipelining: bool,
        size: bool,
        timeout: float | None,
    ) -> None:
        self.transport = transport
        self.pipelining, self.size, self.timeout = pipelining, size, timeout
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None  # replies awaited
        self._drain: asyncio.Future[None] | None = None  # the transport taking more data, awaited
        self._paused = False  # the transport's write buffer is over its high-water mark
        self._wanted = 0
        self._outstanding = 0  # replies the commands written so far still owe
        self._lost: BaseException | None = None
        transport.set_protocol(self)

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        if self._lost is not None:
            return  # closing: nothing more is read
        self._buffer += data
        try:
            self._parse()
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            return
        if self._waiter is not None and len(self._replies) >= self._wanted and not self._waiter.done():
            self._waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)

    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self.transport.is_closing()

    def close(self) -> None:
        if self._lost is None:
            self._lost = aiosmtplib.SMTPServerDisconnected("Connection closed")
        self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        for waiter in (self._waiter, self._drain):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: nobody may be waiting any more
        # Aborted, not closed: a close would keep the socket, and what is still buffered, until a server
        # that stopped reading reads it all.
        self.transport.abort()

    def _parse(self) -> None:
        buffer = self._buffer
        while True:
            offset, lines = 0, []
            while True:
                end = buffer.find(b"\n", offset)
                if end < 0:
                    if len(buffer) > MAX_REPLY_BYTES:
                        raise aiosmtplib.SMTPResponseException(-1, "Response too long")
                    return
                line = bytes(buffer[offset : end + 1])
                if len(line) > MAX_REPLY_LINE:
                    raise aiosmtplib.SMTPResponseException(-1, "Response too long")
                offset = end + 1
                lines.append(line)
                if line[3:4] != b"-":
                    break
            try:
                code = int(lines[-1][:3])
            except ValueError:
                raise aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response line") from None
            if len(self._replies) >= self._outstanding:
                # a reply to no command (a server giving up on an idle session, or out of step): never
                # paired with the next command's
                raise aiosmtplib.SMTPResponseException(-1, "Unexpected reply from the server")
            text = b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
            self._replies.append(SMTPResponse(code, text.decode("utf-8", "surrogateescape")))
            del buffer[:offset]

    # commands
    def _write(self, data: bytes | memoryview, replies: int = 1) -> None:
        if self._lost is not None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._outstanding += replies
        self.transport.write(data)

    async def _write_data(self, payload: bytes) -> None:
        """The message data, `DATA_CHUNK` at a time, each piece written only while the transport is not
        paused; a wait for it to drain lasts at most `timeout` (then the session fails as timed out)."""
        self._outstanding += 1  # the reply to the data (a server may answer before it has read it all)
        data = memoryview(payload)
        for start in range(0, len(data), DATA_CHUNK):
            if self._paused:
                if self._lost is not None:
                    raise self._lost
                self._drain = self._loop.create_future()
                try:
                    await self._wait(self._drain, aiosmtplib.SMTPTimeoutError, DRAIN_TIMED_OUT)
                finally:
                    self._drain = None
            self._write(data[start : start + DATA_CHUNK], replies=0)

    async def _read(self, count: int) -> list[SMTPResponse]:
        if len(self._replies) < count:
            if self._lost is not None:
                raise self._lost
            self._waiter = self._loop.create_future()
            self._wanted = count
            try:
                await self._wait(self._waiter, aiosmtplib.SMTPReadTimeoutError, READ_TIMED_OUT)
            finally:
                self._waiter = None
        self._outstanding -= count
        return [self._replies.popleft() for _ in range(count)]

    async def _wait(self, waiter: asyncio.Future[None], error: type[Exception], text: str) -> None:
        timer = self._loop.call_later(self.timeout, self._time_out, error, text) if self.timeout else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _time_out(self, error: type[Exception], text: str) -> None:
        # The session is out of step with the server now: it is closed, never reused.
        self._fail(error(text))

    async def command(self, line: bytes) -> SMTPResponse:
        self._write(line + b"\r\n")
        return (await self._read(1))[0]

    async def sendmail(self, mail: Transaction) -> dict[str, SMTPResponse]:
        """One transaction; the refused recipients (the rest accepted). Raises aiosmtplib's
        SMTPSenderRefused / SMTPRecipientsRefused / SMTPDataError after resetting the envelope, and
        SMTPServerDisconnected / SMTPReadTimeoutError (a reply) / SMTPTimeoutError (the server not reading
        the data) with the session closed."""
        sender, recipients, payload = mail.sender, mail.recipients, mail.payload
        first = mail.mail_from + (b" SIZE=%d\r\n" % mail.size if self.size else b"\r\n")
        commands = [first, *mail.rcpt_to]
        if self.pipelining:
            self._write(b"".join(commands) + b"DATA\r\n", len(commands) + 1)
            replies = await self._read(len(commands) + 1)
            mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        else:
            self._write(commands[0])
            [mail_reply] = await self._read(1)
            rcpt_replies, data_reply = [], None
            if mail_reply.code == 250:
                for command in commands[1:]:
                    self._write(command)
                    rcpt_replies += await self._read(1)
        refused = {
            r: reply
            for r, reply in zip(recipients, rcpt_replies, strict=False)
            if reply.code not in (250, 251)
        }
        failure: aiosmtplib.SMTPException | None = None
        if mail_reply.code != 250:
            failure = aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        elif len(refused) == len(recipients):
            failure = aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(v.code, v.message, r) for r, v in refused.items()]
            )
        if data_reply is None and failure is None:
            data_reply = await self.command(b"DATA")
        if data_reply is not None and data_reply.code == 354:
            if failure is not None:  # pipelined, and the server wants the data of a failed envelope
                self._write(b".\r\n")
                await self._read(1)
            else:
                await self._write_data(payload)
                [done] = await self._read(1)
                if done.code != 250:
                    await self._reset()
                    raise aiosmtplib.SMTPDataError(done.code, done.message)
                return refused
        elif failure is None:
            assert data_reply is not None
            failure = aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
        await self._reset()
        raise failure

    async def _reset(self) -> None:
        try:
            await self.command(b"RSET")
        except (aiosmtplib.SMTPException, ConnectionError):
            pass  # the caller's error says what happened; a dead session is dropped by the pool

    async def noop(self) -> None:
        reply = await self.command(b"NOOP")
        if reply.code != 250:
            raise aiosmtplib.SMTPResponseException(reply.code, reply.message)

    async def quit(self) -> None:
        try:
            await self.command(b"QUIT")
        finally:
            self.close()


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
        self._idle: list[tuple[SmtpSession, float]] = []
        self._connect_failure: tuple[float, BaseException] | None = None
        self._closed = False

    async def sendmail(self, sender: str, recipients: list[str], raw: bytes) -> dict[str, SMTPResponse]:
        """Refused recipients (the rest accepted); raises aiosmtplib/socket errors as they come, and
        ValueError for an address that cannot be put in a command (before any connection is used)."""
        mail = Transaction(sender, recipients, raw)
        async with self._slots:
            smtp, reused = await self._checkout()
            try:
                return await self._transaction(smtp, mail)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not reused:
                    raise
            smtp, _ = await self._checkout(fresh=True)
            return await self._transaction(smtp, mail)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(smtp) for smtp, _ in idle))

    async def _transaction(self, smtp: SmtpSession, mail: Transaction) -> dict[str, SMTPResponse]:
        try:
            refused = await smtp.sendmail(mail)
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

    async def _checkout(self, *, fresh: bool = False) -> tuple[SmtpSession, bool]:
        while self._idle and not fresh:
            smtp, last_used = self._idle.pop()
            if await self._alive(smtp, last_used):
                return smtp, True
        return await self._open(), False

    def _checkin(self, smtp: SmtpSession, *, reusable: bool) -> None:
        if reusable and smtp.is_connected and not self._closed:
            self._idle.append((smtp, time.monotonic()))
        else:
            smtp.close()

    async def _alive(self, smtp: SmtpSession, last_used: float) -> bool:
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

    async def _open(self) -> SmtpSession:
        # A server that just refused us is not asked again by every queued message.
        if (
            self._connect_failure
            and time.monotonic() - self._connect_failure[0] < CONNECT_FAILURE_HOLD_SECONDS
        ):
            raise self._connect_failure[1]
        try:
            session = await open_session(await self._pinned_socket(), self.config)
        except FAILURES as exc:
            self._connect_failure = (time.monotonic(), exc)
            raise
        self._connect_failure = None
        self.connections_opened += 1
        return session

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

    @staticmethod
    async def _quit(smtp: SmtpSession) -> None:
        try:
            async with asyncio.timeout(2.0):
                await smtp.quit()
        except FAILURES:
            smtp.close()


async def open_session(sock: socket.socket, config: Config) -> SmtpSession:
    """A session on a connected socket: aiosmtplib sets it up (greeting, STARTTLS or TLS, AUTH, EHLO),
    then `SmtpSession` takes its transport. The socket is closed if the setup fails."""
    smtp: aiosmtplib.SMTP | None = None
    try:
        smtp = aiosmtplib.SMTP(
            sock=sock,
            hostname=config.host,  # with `sock`: the name TLS checks the certificate against
            username=config.username,
            password=config.password,
            local_hostname=config.helo_name,
            timeout=config.timeout,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            validate_certs=config.validate_certs,
        )
        await smtp.connect()  # greeting, STARTTLS or TLS, AUTH
        if smtp.is_ehlo_or_helo_needed:
            try:
                await smtp.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not smtp.is_connected:
                    raise
                await smtp.helo()
        assert smtp.transport is not None
        return SmtpSession(
            smtp.transport,  # type: ignore[arg-type]
            pipelining=smtp.supports_extension("pipelining"),
            size=smtp.supports_extension("size"),
            timeout=config.timeout,
        )
    except BaseException:
        if smtp is not None:
            smtp.close()
        sock.close()
        raise


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
