"""The message data is paced by the transport's flow control (providers/smtp.SmtpSession): a server that
stops reading leaves at most the transport's high-water mark plus one `DATA_CHUNK` in our write buffer,
not the whole message; one that never reads again fails the send as a timeout after `timeout`, not a
hang; and a server that reads gets the exact bytes. Real sockets on 127.0.0.1, with small kernel buffers
on both ends so that a few MB cannot hide in them."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from providers.base import Sent, Transient
from providers.smtp import (
    DATA_CHUNK,
    DRAIN_TIMED_OUT,
    Adapter,
    SmtpSession,
    Transaction,
    classify_failure,
    open_session,
)
from schemas.messages import Attachment
from tests.local_egress import LOCAL
from tests.pipeline.conftest import wait_for

from .sink import SmtpSink
from .test_smtp_adapter import config_for, message

KERNEL_BUFFER = 32 * 1024  # SO_SNDBUF / SO_RCVBUF asked for (Linux doubles it)


def big_message(megabytes: int = 4) -> bytes:
    """A rendered message of a few MB whose lines include some the DATA section must dot-stuff."""
    line = b"x" * 76 + b"\r\n"
    body = (line * 1000 + b".a line that starts with a dot\r\n") * (megabytes * 1024 * 1024 // 78_000)
    return b"From: hello@acme.com\r\nTo: ana@example.com\r\nSubject: big\r\n\r\n" + body


class Peer(asyncio.Protocol):
    """A minimal SMTP server: 250 to everything, 354 to DATA, each message's data recorded as it came on
    the wire (dot-stuffed, with its terminator). While the server's `stalls` last, a connection stops
    reading once it has answered DATA, until `resume`."""

    def __init__(self, server: PeerServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]  # a TCP transport
        self.server.connections.append(self)
        self.transport.write(b"220 peer ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.server.messages.append(bytes(self.buffer[: end + 5]))
                del self.buffer[: end + 5]
                self.in_data = False
                answers.append(b"250 queued")
                continue
            line, sep, _ = self.buffer.partition(b"\r\n")
            if not sep:
                break
            del self.buffer[: len(line) + 2]
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
            if verb == b"EHLO":
                extensions = b"250-PIPELINING\r\n" if self.server.pipelining else b""
                answers.append(b"250-peer\r\n" + extensions + b"250 SIZE 100000000")
            elif verb == b"DATA":
                self.in_data = True
                answers.append(b"354 go ahead")
            elif verb == b"QUIT":
                answers.append(b"221 bye")
            else:
                answers.append(b"250 ok")
        if answers:
            self.transport.write(b"".join(a + b"\r\n" for a in answers))
        if self.in_data and self.server.stalls > 0:
            self.server.stalls -= 1
            self.transport.pause_reading()
            self.server.stalled.set()

    def resume(self) -> None:
        self.transport.resume_reading()


class PeerServer:
    def __init__(self, *, stalls: int = 0, pipelining: bool = True) -> None:
        self.stalls, self.pipelining = stalls, pipelining
        self.connections: list[Peer] = []
        self.messages: list[bytes] = []
        self.stalled = asyncio.Event()

    async def start(self) -> None:
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listening.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER
        )  # accepted sockets inherit it
        listening.bind(("127.0.0.1", 0))
        self.server = await asyncio.get_running_loop().create_server(lambda: Peer(self), sock=listening)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for peer in self.connections:
            peer.transport.abort()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[PeerServer]:
    server = PeerServer(**getattr(request, "param", {}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def session_to(port: int, *, send_timeout: float) -> SmtpSession:
    """Our session (the pool's setup: `open_session`) on a socket with a small kernel send buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await open_session(sock, config_for(port, timeout=send_timeout))


@pytest.mark.parametrize("peer", [{"stalls": 1}], indirect=True)
async def test_a_peer_that_stops_reading_holds_our_buffer_to_the_high_water_mark(peer: PeerServer) -> None:
    session = await session_to(peer.port, send_timeout=30.0)
    mail = Transaction("hello@acme.com", ["ana@example.com"], big_message(4))
    transport = session.transport
    _, high = transport.get_write_buffer_limits()
    sending = asyncio.create_task(session.sendmail(mail))
    try:
        await asyncio.wait_for(peer.stalled.wait(), 10)
        # Until our buffer is past its high-water mark: the kernel's buffers on both ends are full.
        await wait_for(
            lambda: transport.get_write_buffer_size() > high or sending.done(), within=10, every=0.01
        )
        assert not sending.done(), "the peer reads nothing: the message cannot have been sent"
        buffered = transport.get_write_buffer_size()
        assert buffered <= high + DATA_CHUNK, f"{buffered} bytes buffered: the data was not paced"
        assert len(mail.payload) > 10 * (high + DATA_CHUNK)  # what an unpaced write would have buffered
        peer.connections[0].resume()
        assert await asyncio.wait_for(sending, 30) == {}
    finally:
        sending.cancel()
        session.close()
    assert peer.messages == [mail.payload]  # the exact bytes, dot-stuffed, once


@pytest.mark.parametrize("peer", [{"stalls": 1}], indirect=True)
async def test_a_peer_that_never_reads_fails_the_send_as_a_timeout(peer: PeerServer) -> None:
    session = await session_to(peer.port, send_timeout=0.5)
    mail = Transaction("hello@acme.com", ["ana@example.com"], big_message(4))
    with pytest.raises(aiosmtplib.SMTPTimeoutError) as failure:
        await asyncio.wait_for(session.sendmail(mail), 30)  # a hang fails here instead
    # The wait for the transport to drain timed out (not the reply's, which a write of the whole
    # message at once would have come to), the session is dropped, and the pool's classification is
    # the timeouts'.
    assert str(failure.value) == DRAIN_TIMED_OUT
    assert not session.is_connected and session.transport.get_write_buffer_size() == 0
    assert classify_failure(failure.value, {}) == Transient(f"SMTP timeout: {DRAIN_TIMED_OUT}")


@pytest.mark.parametrize(
    "peer", [{"pipelining": True}, {"pipelining": False}], ids=["pipelining", "one-at-a-time"], indirect=True
)
async def test_a_reading_peer_gets_the_exact_bytes(peer: PeerServer) -> None:
    session = await session_to(peer.port, send_timeout=30.0)
    mails = [
        Transaction("hello@acme.com", ["ana@example.com"], raw)
        for raw in (big_message(3), b"Subject: small\r\n\r\n.hi\r\n", big_message(1) + b".")
    ]
    try:
        for mail in mails:
            assert await asyncio.wait_for(session.sendmail(mail), 30) == {}
    finally:
        await session.quit()
    assert peer.messages == [mail.payload for mail in mails]


@pytest.mark.parametrize("peer", [{"stalls": 1}], indirect=True)
async def test_the_adapter_answers_a_stalled_send_as_transient_and_sends_on_a_new_connection(
    peer: PeerServer,
) -> None:
    """Through the pool: a server that stops reading a message of several MB (more than the kernel's
    send buffer can take) costs a Transient timeout after `timeout`, the connection is dropped, and the
    next message goes over a fresh one."""
    adapter = Adapter(config_for(peer.port, timeout=0.5, pool_size=1), egress=LOCAL)
    attachment = Attachment(filename="big.bin", content=bytes(range(256)) * (8 * 4096))  # 8 MiB
    try:
        stalled = await asyncio.wait_for(adapter.send(message(1, attachments=[attachment])), 30)
        sent = await asyncio.wait_for(adapter.send(message(2)), 30)
    finally:
        await adapter.close()
    assert isinstance(stalled, Transient) and stalled.reason.startswith("SMTP timeout: "), stalled
    assert isinstance(sent, Sent)
    assert adapter.pool.connections_opened == 2 and len(peer.messages) == 1


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_a_big_attachment_arrives_intact_at_a_real_server(
    tls_context: ssl.SSLContext, security: str
) -> None:
    """aiosmtpd, in the clear and over TLS (whose transport has flow control of its own)."""
    content = bytes(range(256)) * (12 * 1024)  # 3 MiB, 4 MiB as base64
    tls = {"tls": tls_context, "implicit_tls": security == "tls"} if security != "none" else {}
    with SmtpSink(**tls) as sink:  # type: ignore[arg-type]
        adapter = Adapter(config_for(sink.port, security=security, validate_certs=False), egress=LOCAL)
        try:
            [outcome] = await adapter.send_batch(
                [message(1, attachments=[Attachment(filename="big.bin", content=content)])]
            )
        finally:
            await adapter.close()
    assert isinstance(outcome, Sent), outcome
    [delivery] = sink.deliveries
    assert delivery.tls == (security != "none")
    [part] = list(delivery.parsed().iter_attachments())
    assert part.get_content() == content
