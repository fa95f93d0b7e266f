"""The SMTP transaction on our own protocol (providers/smtp.SmtpSession): replies paired with their
commands with and without PIPELINING, one write per envelope when the server offers PIPELINING and one
command at a time when it does not, no per-message EHLO / RSET / NOOP, the DATA section's encoding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from providers.base import Permanent, RecipientRefusal, Sent, Transient
from providers.smtp import Adapter, data_payload
from tests.local_egress import LOCAL

from .sink import SmtpSink
from .test_smtp_adapter import config_for, message


@pytest.fixture(params=[False, True], ids=["one-command-at-a-time", "pipelining"])
def any_sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    with SmtpSink(pipelining=request.param) as server:
        yield server


async def test_replies_are_paired_with_their_commands(any_sink: SmtpSink) -> None:
    """Refusals of some, all or no recipients, in one batch on two connections: each outcome is its own
    message's, pipelined or not (a pipelined reply read for the wrong command would mix them up)."""
    adapter = Adapter(config_for(any_sink.port, pool_size=2), egress=LOCAL)
    try:
        outcomes = await adapter.send_batch(
            [
                message(1, "tempfail@example.com"),
                message(2, "unknown@example.com"),
                message(3, "ok@example.com", "unknown2@example.com", "full2@example.com"),
                message(4, "unknown3@example.com", "busy@example.com"),
                message(5, "ok2@example.com"),
                *(message(10 + i, f"r{i}@example.com") for i in range(20)),
            ]
        )
    finally:
        await adapter.close()
    assert outcomes[0] == Transient(
        "SMTP 451 4.3.0 Try again later (1 recipients deferred)", retry_after=120.0
    )
    assert isinstance(outcomes[1], Permanent)
    assert outcomes[1].bounced == [
        RecipientRefusal("unknown@example.com", "550", "5.1.1 No such user", hard=True)
    ]
    assert outcomes[2] == Sent(
        provider_message_id="<msg_01JS0000000000000000000003@acme.com>",
        refused=[
            RecipientRefusal("unknown2@example.com", "550", "5.1.1 No such user", hard=True),
            RecipientRefusal("full2@example.com", "552", "5.2.2 Mailbox full", hard=False),
        ],
    )
    assert isinstance(outcomes[3], Transient) and outcomes[3].retry_after == 300.0
    assert all(isinstance(o, Sent) and not o.refused for o in outcomes[4:])
    delivered = {d.parsed()["Subject"]: d.rcpt_tos for d in any_sink.deliveries}
    assert delivered["Message 3"] == ["ok@example.com"]
    assert len(delivered) == 22  # 3, 5 and the twenty


async def test_rejected_data_after_a_pipelined_envelope_resets_and_keeps_the_connection() -> None:
    with SmtpSink(pipelining=True) as sink:
        adapter = Adapter(config_for(sink.port, pool_size=1), egress=LOCAL)
        try:
            sink.handler.reject_data = True
            [rejected] = await adapter.send_batch([message(1)])
            sink.handler.reject_data = False
            [sent] = await adapter.send_batch([message(2)])
        finally:
            await adapter.close()
    assert rejected == Permanent("SMTP 554 5.7.1 Message content rejected", code="554")
    assert isinstance(sent, Sent)
    assert [d.parsed()["Subject"] for d in sink.deliveries] == ["Message 2"]
    assert adapter.pool.connections_opened == 1


async def test_dot_stuffing_and_line_endings_arrive_intact(any_sink: SmtpSink) -> None:
    text = ".starts with a dot\n..two dots\n.\nlast line"
    adapter = Adapter(config_for(any_sink.port), egress=LOCAL)
    try:
        [outcome] = await adapter.send_batch([message(1, html=None, text=text)])
    finally:
        await adapter.close()
    assert isinstance(outcome, Sent)
    body = any_sink.deliveries[0].parsed().get_content()
    assert body.replace("\r\n", "\n").rstrip("\n") == text


def test_data_payload() -> None:
    assert data_payload(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert data_payload(b".x\r\ny") == b"..x\r\ny\r\n.\r\n"
    assert data_payload(b"a\nb\rc\r\n") == b"a\r\nb\r\nc\r\n.\r\n"  # bare LF / CR become CRLF


# --- a scripted server that records how the commands arrived ------------------------------------


@dataclass
class Recorder(asyncio.Protocol):
    """A minimal SMTP server: records each command with the number of the read it arrived in, answers
    in order, and answers 503 to any command that came in the same read as another while it does not
    advertise PIPELINING (a client pipelining uninvited)."""

    pipelining: bool
    commands: list[tuple[int, str]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    violations: int = 0
    reads: int = 0
    _buffer: bytes = b""
    _data: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(b"220 recorder ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self._buffer += data
        answers, commands_in_read = [], 0
        while True:
            if self._data is not None:
                end = self._buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.messages.append(self._data + self._buffer[: end + 2])
                self._buffer, self._data = self._buffer[end + 5 :], None
                answers.append(b"250 queued")
                continue
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                break
            self._buffer = rest
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode()
            self.commands.append((self.reads, verb))
            commands_in_read += 1
            if commands_in_read > 1 and not self.pipelining:
                self.violations += 1
            if verb == "EHLO":
                extensions = "250-PIPELINING\r\n" if self.pipelining else ""
                answers.append(f"250-recorder\r\n{extensions}250 SIZE 10000000".encode())
            elif verb == "DATA":
                self._data = b""
                answers.append(b"354 go ahead")
            elif verb == "QUIT":
                answers.append(b"221 bye")
            else:  # MAIL, RCPT, RSET, NOOP
                answers.append(b"250 ok")
        if answers:
            self.transport.write(b"".join(a + b"\r\n" for a in answers))  # type: ignore[attr-defined]


@pytest.fixture
async def recorder_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder(pipelining=request.param)
    server = await asyncio.get_running_loop().create_server(lambda: recorder, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield recorder, port
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("recorder_server", [False, True], ids=["no-pipelining", "pipelining"], indirect=True)
async def test_envelope_writes_and_no_per_message_commands(recorder_server: tuple[Recorder, int]) -> None:
    recorder, port = recorder_server
    adapter = Adapter(config_for(port, pool_size=1), egress=LOCAL)
    try:
        for batch in range(3):
            outcomes = await adapter.send_batch(
                [message(batch * 4 + i, "a@example.com", "b@example.com") for i in range(4)]
            )
            assert all(isinstance(o, Sent) for o in outcomes)
    finally:
        await adapter.close()
    verbs = [verb for _, verb in recorder.commands]
    assert len(recorder.messages) == 12
    # the session is set up once: one EHLO; no RSET between messages, no NOOP on a busy connection
    assert verbs.count("EHLO") == 1 and "RSET" not in verbs and "NOOP" not in verbs
    assert verbs.count("MAIL") == 12 and verbs.count("RCPT") == 24 and verbs.count("DATA") == 12
    reads = {}
    for read, verb in recorder.commands:
        reads.setdefault(read, []).append(verb)
    if recorder.pipelining:  # MAIL, both RCPTs and DATA in one write per message
        assert sorted(v for v in reads.values() if "MAIL" in v) == [["MAIL", "RCPT", "RCPT", "DATA"]] * 12
    else:  # never more than one command unanswered
        assert recorder.violations == 0
        assert all(len(v) == 1 for v in reads.values() if "QUIT" not in v)


def test_envelope_addresses() -> None:
    from providers.smtp import envelope_address

    assert envelope_address("ana@example.com") == b"<ana@example.com>"
    assert envelope_address("a.b+c@x_y.example") == b"<a.b+c@x_y.example>"
    assert envelope_address('"john doe"@example.com') == b'<"john doe"@example.com>'  # aiosmtplib's quoting
    for bad in ("ana@example.com\r\nRCPT TO:<evil@x.com>", "ü@example.com"):
        with pytest.raises(ValueError):
            envelope_address(bad)
