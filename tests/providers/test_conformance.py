"""One conformance suite for every provider adapter, against its simulator (or moto for SES)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from providers.base import Permanent, Sent, Throttled, Transient
from providers.http_errors import MESSAGE_ID_FIELD, MESSAGE_ID_HEADER
from providers.simulators.base import SimulatorOptions, whole_seconds
from schemas.ids import new_id
from schemas.messages import Address, Attachment, OutboundMessage
from tests.local_egress import LOCAL

from .provider_harness import (
    ALL_PROVIDERS,
    HTTP_PROVIDERS,
    Harness,
    start_ses,
    start_simulated,
    verify_moto_domain,
)

PDF = b"%PDF-1.4\n" + bytes(range(256))


def outbound(**overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "id": new_id("msg"),
        "workspace": "ws_test",
        "from_": Address("hello@acme.test", "Acme"),
        "to": [Address("ana@example.com", "Ana")],
        "reply_to": [Address("support@acme.test")],
        "subject": "Welcome aboard",
        "html": "<p>Hi Ana</p>",
        "text": "Hi Ana",
        "headers": {"X-Entity-Ref-ID": "123"},
        "attachments": [Attachment(filename="terms.pdf", content=PDF, content_type="application/pdf")],
        "tags": ["onboarding"],
        "metadata": {"user_id": "42"},
    }
    fields.update(overrides)
    return OutboundMessage(**fields)


@pytest.fixture(params=ALL_PROVIDERS)
async def harness(request: pytest.FixtureRequest, serve: Any, http: Any, moto_url: str) -> Any:
    if request.param == "amazon-ses":
        await verify_moto_domain(moto_url)
        started = start_ses(moto_url)
    else:
        started = await start_simulated(request.param, serve, http)
    yield started
    await started.adapter.close()


async def recorded_for(harness: Harness, message: OutboundMessage) -> list[Any]:
    return [m for m in await harness.read() if m.headers.get(MESSAGE_ID_HEADER) == message.id]


async def test_message_fields_survive(harness: Harness) -> None:
    message = outbound()
    [outcome] = await harness.adapter.send_batch([message])
    assert isinstance(outcome, Sent) and outcome.provider_message_id
    [got] = await recorded_for(harness, message)
    assert got.sender == "Acme <hello@acme.test>"
    assert got.to == ["Ana <ana@example.com>"]
    assert got.reply_to == ["support@acme.test"]
    assert got.subject == "Welcome aboard"
    assert got.html.rstrip("\n") == "<p>Hi Ana</p>"
    assert got.text.rstrip("\n") == "Hi Ana"
    assert got.headers["X-Entity-Ref-ID"] == "123"
    [attachment] = got.attachments
    assert (attachment.filename, attachment.content_type, attachment.content) == (
        "terms.pdf",
        "application/pdf",
        PDF,
    )
    if harness.name != "amazon-ses":  # moto keeps no EmailTags; see test_ses_email_tags
        assert got.provider_message_id == outcome.provider_message_id.strip("<>")
        assert got.metadata["user_id"] == "42"
        assert got.metadata[MESSAGE_ID_FIELD] == message.id
        tags = got.metadata if harness.name == "resend" else dict.fromkeys(got.tags, "true")
        assert tags["onboarding"] == "true"


async def test_cc_bcc_and_several_recipients_survive(harness: Harness) -> None:
    message = outbound(
        to=[Address("ana@example.com"), Address("bo@example.org", "Bo")],
        cc=[Address("cy@example.net")],
        bcc=[Address("di@example.com")],
        attachments=[],
    )
    [outcome] = await harness.adapter.send_batch([message])
    assert isinstance(outcome, Sent)
    [got] = await recorded_for(harness, message)
    assert got.to == ["ana@example.com", "Bo <bo@example.org>"]
    if harness.name != "amazon-ses":  # raw MIME carries no Bcc header; moto keeps only the MIME
        assert got.cc == ["cy@example.net"] and got.bcc == ["di@example.com"]


@pytest.mark.parametrize(
    ("provider", "count", "expected_calls", "path"),
    [
        ("resend", 250, 3, "/emails/batch"),
        ("postmark", 600, 2, "/email/batch"),
        ("sendgrid", 30, 1, "/v3/mail/send"),
        ("mailgun", 30, 1, "/v3/mg.acme.test/messages"),
    ],
)
async def test_batches_respect_provider_limits(
    provider: str, count: int, expected_calls: int, path: str, serve: Any, http: Any
) -> None:
    harness = await start_simulated(provider, serve, http)
    messages = [outbound(to=[Address(f"user{i}@example.com")], attachments=[]) for i in range(count)]
    outcomes = await harness.adapter.send_batch(messages)
    assert all(isinstance(o, Sent) for o in outcomes)
    assert harness.state.requests == expected_calls
    recorded = await harness.read()
    assert {m.request_path for m in recorded} == {path}
    # each recipient's copy carries its own message id, whatever the batching
    by_recipient = {m.to[0]: m.headers[MESSAGE_ID_HEADER] for m in recorded}
    assert by_recipient == {m.to[0].email: m.id for m in messages}


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun"])
async def test_different_content_is_one_request_per_message(provider: str, serve: Any, http: Any) -> None:
    harness = await start_simulated(provider, serve, http)
    messages = [outbound(to=[Address(f"u{i}@example.com")], subject=f"Invoice {i}") for i in range(4)]
    assert all(isinstance(o, Sent) for o in await harness.adapter.send_batch(messages))
    assert harness.state.requests == 4


async def test_resend_sends_attachments_alone_and_the_rest_batched(serve: Any, http: Any) -> None:
    harness = await start_simulated("resend", serve, http)
    messages = [
        outbound(to=[Address(f"u{i}@example.com")], attachments=[] if i % 2 else outbound().attachments)
        for i in range(6)
    ]
    outcomes = await harness.adapter.send_batch(messages)
    assert all(isinstance(o, Sent) for o in outcomes)
    paths = sorted(m.request_path for m in await harness.read())
    assert paths == ["/emails"] * 3 + ["/emails/batch"] * 3
    assert harness.state.requests == 4


async def test_resend_idempotency_key_makes_a_retry_harmless(serve: Any, http: Any) -> None:
    harness = await start_simulated("resend", serve, http)
    message = outbound()
    [first] = await harness.adapter.send_batch([message])
    [again] = await harness.adapter.send_batch([message])
    assert isinstance(first, Sent) and first == again
    assert len(await harness.read()) == 1


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
async def test_429_becomes_throttled_with_the_providers_retry_time(
    provider: str, serve: Any, http: Any
) -> None:
    harness = await start_simulated(provider, serve, http, SimulatorOptions(rate_limit=0.4, rate_burst=1))
    [first] = await harness.adapter.send_batch([outbound(attachments=[])])
    [second] = await harness.adapter.send_batch([outbound(attachments=[])])
    assert isinstance(first, Sent)
    assert isinstance(second, Throttled), second
    wait = harness.state.last_retry_after  # what the simulator's bucket really needs
    assert wait is not None and wait > 1.5
    # whole seconds, rounded up, so a retry at retry_after is allowed; SendGrid advertises a Unix
    # reset time instead of a delay, so its wait is known to within a second
    assert wait - 0.05 <= second.retry_after < wait + 1.0
    if provider != "sendgrid":
        assert second.retry_after == whole_seconds(wait)


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
async def test_injected_failures_classify(provider: str, serve: Any, http: Any) -> None:
    harness = await start_simulated(provider, serve, http)
    transient = outbound(to=[Address("fail-transient-1@example.com")])
    permanent = outbound(to=[Address("fail-permanent-1@example.com")])
    outcomes = [(await harness.adapter.send_batch([m]))[0] for m in (transient, permanent)]
    assert isinstance(outcomes[0], Transient) and not outcomes[0].server_down
    assert isinstance(outcomes[1], Permanent) and outcomes[1].reason.startswith(("HTTP 4", "Postmark 300"))
    assert "address" in outcomes[1].reason
    harness.state.auth_mode = "reject"
    [refused] = await harness.adapter.send_batch([outbound()])
    assert isinstance(refused, Transient) and refused.server_down
    assert await harness.read() == []


@pytest.mark.parametrize("provider", HTTP_PROVIDERS)
async def test_random_failures_are_transient(provider: str, serve: Any, http: Any) -> None:
    harness = await start_simulated(provider, serve, http, SimulatorOptions(failure_probability=1.0))
    [outcome] = await harness.adapter.send_batch([outbound()])
    assert isinstance(outcome, Transient) and "HTTP 5" in outcome.reason


async def test_postmark_batch_gives_each_message_its_own_outcome(serve: Any, http: Any) -> None:
    harness = await start_simulated("postmark", serve, http)
    good, inactive = outbound(), outbound(to=[Address("inactive-1@example.com"), Address("ok@example.com")])
    outcomes = await harness.adapter.send_batch([good, inactive])
    assert isinstance(outcomes[0], Sent)
    assert isinstance(outcomes[1], Permanent) and outcomes[1].code == "406"
    assert [r.email for r in outcomes[1].bounced] == ["inactive-1@example.com"]
    assert harness.state.requests == 1


async def test_wrong_key_marks_the_server_down(serve: Any, http: Any) -> None:
    harness = await start_simulated("resend", serve, http, SimulatorOptions(api_key="re_right"))
    from providers import resend

    adapter = resend.Adapter(
        resend.Config(api_key="re_wrong", base_url=harness.adapter.config.base_url), http=http, egress=LOCAL
    )
    [outcome] = await adapter.send_batch([outbound()])
    assert isinstance(outcome, Transient) and outcome.server_down and "invalid_api_key" not in outcome.reason
    assert "API key is invalid" in outcome.reason


def test_outcomes_are_msgpack_round_trippable() -> None:
    outcome = Permanent("HTTP 422: bad", code="validation_error")
    encoded = msgspec.msgpack.encode([outcome])
    assert msgspec.msgpack.decode(encoded, type=list[Sent | Throttled | Transient | Permanent]) == [outcome]
