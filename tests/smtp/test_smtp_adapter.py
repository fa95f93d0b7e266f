"""The SMTP adapter against a real aiosmtpd server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable

import dkim
import pytest

from providers.base import Permanent, RecipientRefusal, Sent, Transient
from providers.dkim import dns_records, generate_domain_key
from providers.smtp import Adapter, Config, SmtpConnectionPool
from schemas.messages import Address, Attachment, OutboundMessage
from store.redis_server import free_port
from tests.local_egress import LOCAL

from .sink import SmtpSink

AdapterFactory = Callable[..., Adapter]


def message(n: int = 0, *to: str, **overrides: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "id": f"msg_01JS{n:022d}",
        "workspace": "acme",
        "from_": Address("hello@acme.com", "Acme"),
        "to": [Address(address) for address in (to or ("ana@example.com",))],
        "subject": f"Message {n}",
        "html": f"<p>Hello {n}</p>",
        "text": f"Hello {n}",
    }
    fields.update(overrides)
    return OutboundMessage(**fields)  # type: ignore[arg-type]


def config_for(port: int, **overrides: object) -> Config:
    fields: dict[str, object] = {"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5.0}
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def make_adapter() -> AsyncIterator[AdapterFactory]:
    adapters: list[Adapter] = []

    def make(port: int, **overrides: object) -> Adapter:
        adapters.append(Adapter(config_for(port, **overrides), egress=LOCAL))
        return adapters[-1]

    yield make
    for adapter in adapters:
        await adapter.close()


async def test_message_arrives_with_headers_body_attachments_and_bcc(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter(sink.port)
    msg = message(
        1,
        "ana@example.com",
        cc=[Address("cc@example.org")],
        bcc=[Address("hidden@example.net")],
        headers={"X-Entity-Ref-ID": "123"},
        attachments=[Attachment(filename="a.pdf", content=b"%PDF\x00\x01", content_type="application/pdf")],
    )
    [outcome] = await adapter.send_batch([msg])
    assert outcome == Sent(provider_message_id=f"<{msg.id}@acme.com>")
    [delivery] = sink.deliveries
    assert delivery.mail_from == "hello@acme.com"
    assert delivery.rcpt_tos == ["ana@example.com", "cc@example.org", "hidden@example.net"]
    parsed = delivery.parsed()
    assert parsed["Message-ID"] == outcome.provider_message_id
    assert parsed["X-Mailers-Message-Id"] == msg.id
    assert parsed["X-Entity-Ref-ID"] == "123"
    assert parsed["Bcc"] is None and b"hidden@example.net" not in delivery.content
    assert parsed.get_body(("plain",)).get_content().strip() == "Hello 1"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hello 1</p>"
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == "a.pdf" and attachment.get_content() == b"%PDF\x00\x01"


async def test_idn_recipient_domain(sink: SmtpSink, make_adapter: AdapterFactory) -> None:
    [outcome] = await make_adapter(sink.port).send_batch([message(2, "ana@münchen.example")])
    assert isinstance(outcome, Sent)
    assert sink.deliveries[0].rcpt_tos == ["ana@xn--mnchen-3ya.example"]
    assert sink.deliveries[0].parsed()["To"] == "ana@xn--mnchen-3ya.example"


async def test_replies_are_classified(sink: SmtpSink, make_adapter: AdapterFactory) -> None:
    adapter = make_adapter(sink.port, pool_size=2)
    outcomes = await adapter.send_batch(
        [
            message(1, "tempfail@example.com"),
            message(2, "unknown@example.com"),
            message(3, "full@example.com"),
            message(4, "ok@example.com", "unknown2@example.com", "full2@example.com"),
            message(5, "unknown3@example.com", "busy@example.com"),
            message(6, "ok2@example.com"),
        ]
    )
    assert outcomes[0] == Transient(
        "SMTP 451 4.3.0 Try again later (1 recipients deferred)", retry_after=120.0
    )
    assert isinstance(outcomes[1], Permanent)
    assert outcomes[1].bounced == [
        RecipientRefusal("unknown@example.com", "550", "5.1.1 No such user", hard=True)
    ]
    assert isinstance(outcomes[2], Permanent)
    assert outcomes[2].bounced == [
        RecipientRefusal("full@example.com", "552", "5.2.2 Mailbox full", hard=False)
    ]
    assert outcomes[3] == Sent(
        provider_message_id="<msg_01JS0000000000000000000004@acme.com>",
        refused=[
            RecipientRefusal("unknown2@example.com", "550", "5.1.1 No such user", hard=True),
            RecipientRefusal("full2@example.com", "552", "5.2.2 Mailbox full", hard=False),
        ],
    )
    assert isinstance(outcomes[4], Transient) and outcomes[4].retry_after == 300.0
    assert isinstance(outcomes[5], Sent)
    assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == ["ok2@example.com", "ok@example.com"]


async def test_rejected_content_is_permanent(sink: SmtpSink, make_adapter: AdapterFactory) -> None:
    sink.handler.reject_data = True
    [outcome] = await make_adapter(sink.port).send_batch([message(1)])
    assert outcome == Permanent("SMTP 554 5.7.1 Message content rejected", code="554")


async def test_failed_transaction_is_reset_and_the_connection_reused(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter(sink.port, pool_size=1)
    assert isinstance((await adapter.send_batch([message(1, "tempfail@example.com")]))[0], Transient)
    assert isinstance((await adapter.send_batch([message(2, "unknown@example.com")]))[0], Permanent)
    assert isinstance((await adapter.send_batch([message(3, "ok@example.com")]))[0], Sent)
    assert [d.rcpt_tos for d in sink.deliveries] == [["ok@example.com"]]
    assert sink.connections == 1 and adapter.pool.connections_opened == 1


@pytest.mark.parametrize("pool_size", [1, 4])
async def test_pool_reuses_at_most_pool_size_connections(
    sink: SmtpSink, make_adapter: AdapterFactory, pool_size: int
) -> None:
    adapter = make_adapter(sink.port, pool_size=pool_size)
    for batch in range(3):
        outcomes = await adapter.send_batch([message(batch * 20 + i) for i in range(20)])
        assert all(isinstance(o, Sent) for o in outcomes)
    assert len(sink.deliveries) == 60
    assert len({d.parsed()["Message-ID"] for d in sink.deliveries}) == 60
    assert 1 <= sink.connections <= pool_size
    assert adapter.pool.connections_opened == sink.connections


async def test_reconnects_after_the_server_drops_the_connection(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    adapter = make_adapter(sink.port, pool_size=1)
    assert isinstance((await adapter.send_batch([message(1)]))[0], Sent)
    sink.handler.drop_next_mail = True  # the idle connection dies at our next MAIL
    assert isinstance((await adapter.send_batch([message(2)]))[0], Sent)
    # a hang-up in the middle of a transaction on a fresh connection is transient ...
    outcomes = await adapter.send_batch([message(3, "drop@example.com"), message(4)])
    assert isinstance(outcomes[0], Transient) and "connection" in outcomes[0].reason.lower()
    # ... and the next message goes out on a new connection
    assert isinstance(outcomes[1], Sent)
    assert [d.parsed()["Subject"] for d in sink.deliveries] == ["Message 1", "Message 2", "Message 4"]
    assert sink.connections >= 3


async def test_idle_connections_are_checked_before_reuse(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    busy = make_adapter(sink.port, pool_size=1)
    await busy.send_batch([message(1)])
    await busy.send_batch([message(2)])
    assert sink.handler.noops == 0  # reused within IDLE_CHECK_SECONDS: no extra round trip
    idle = make_adapter(sink.port, pool_size=1)
    idle.pool = SmtpConnectionPool(idle.config, idle_check_seconds=0.0, egress=idle.pool.egress)
    await idle.send_batch([message(3)])
    await idle.send_batch([message(4)])
    assert sink.handler.noops == 1
    assert len(sink.deliveries) == 4 and idle.pool.connections_opened == 1


async def test_unreachable_server_is_transient(make_adapter: AdapterFactory) -> None:
    adapter = make_adapter(free_port(), pool_size=2)
    outcomes = await adapter.send_batch([message(i) for i in range(5)])
    assert all(isinstance(o, Transient) and not o.server_down for o in outcomes)
    assert adapter.pool.connections_opened == 0


async def test_unrenderable_message_is_permanent_and_not_sent(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    outcomes = await make_adapter(sink.port).send_batch(
        [
            message(1, headers={"X-A": "b\r\nBcc: x@evil.com"}),
            message(2, bcc=[Address("x@example.com>\r\nRCPT TO:<y@evil.com")]),
        ]
    )
    assert all(isinstance(o, Permanent) and o.code == "invalid_message" for o in outcomes), outcomes
    assert sink.deliveries == [] and sink.connections == 0


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_and_auth(tls_context: ssl.SSLContext, make_adapter: AdapterFactory, security: str) -> None:
    with SmtpSink(tls=tls_context, implicit_tls=security == "tls", credentials=("relay", "s3cret")) as secure:
        adapter = make_adapter(
            secure.port, security=security, username="relay", password="s3cret", validate_certs=False
        )
        outcomes = await adapter.send_batch([message(1), message(2)])
        assert all(isinstance(o, Sent) for o in outcomes), outcomes
        assert [(d.tls, d.login) for d in secure.deliveries] == [(True, "relay"), (True, "relay")]


async def test_wrong_password_marks_the_server_down(
    tls_context: ssl.SSLContext, make_adapter: AdapterFactory
) -> None:
    with SmtpSink(tls=tls_context, credentials=("relay", "s3cret")) as secure:
        adapter = make_adapter(
            secure.port, security="starttls", username="relay", password="wrong", validate_certs=False
        )
        outcomes = await adapter.send_batch([message(i) for i in range(3)])
        assert all(isinstance(o, Transient) and o.server_down and "535" in o.reason for o in outcomes), (
            outcomes
        )
        assert secure.deliveries == []


async def test_untrusted_certificate_is_refused(
    tls_context: ssl.SSLContext, make_adapter: AdapterFactory
) -> None:
    with SmtpSink(tls=tls_context, credentials=("relay", "s3cret")) as secure:
        adapter = make_adapter(secure.port, security="starttls", username="relay", password="s3cret")
        [outcome] = await adapter.send_batch([message(1)])
        assert isinstance(outcome, Transient) and outcome.server_down, outcome
        assert "certificate" in outcome.reason.lower(), outcome
        assert secure.deliveries == []


async def test_starttls_required_but_not_offered_marks_the_server_down(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    [outcome] = await make_adapter(sink.port, security="starttls").send_batch([message(1)])
    assert isinstance(outcome, Transient) and outcome.server_down and "STARTTLS" in outcome.reason, outcome
    assert sink.deliveries == []


async def test_messages_are_dkim_signed_when_the_config_has_a_key(
    sink: SmtpSink, make_adapter: AdapterFactory
) -> None:
    private_pem, public_b64 = generate_domain_key()
    adapter = make_adapter(
        sink.port, dkim_domain="acme.com", dkim_selector="mlr1", dkim_private_key=private_pem.decode()
    )
    await adapter.send_batch([message(1)])
    record = dns_records(
        "acme.com", "mlr1", public_b64, return_path_host="b.example", spf_include="s.example"
    )[0]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record.value.encode() if name == f"{record.name}.".encode() else b""

    delivered = sink.deliveries[0].content
    assert delivered.startswith(b"DKIM-Signature:")
    assert dkim.verify(delivered, dnsfunc=dnsfunc)
    assert not dkim.verify(delivered.replace(b"Subject: Message 1", b"Subject: Message 2"), dnsfunc=dnsfunc)


def test_config_rejects_half_a_dkim_key() -> None:
    with pytest.raises(ValueError):
        Config(host="h", dkim_domain="acme.com")
    assert set(Config.__secret_fields__) == {"password", "dkim_private_key"}
