"""Simulators enforce the providers' documented limits and expose what they accepted."""

from __future__ import annotations

from typing import Any

from providers.base import Permanent, Sent, Transient
from providers.simulators.base import SimulatorOptions
from schemas.messages import Address

from .provider_harness import start_simulated
from .test_conformance import outbound

MANY = [Address(f"r{i}@example.com") for i in range(51)]


async def test_postmark_refuses_more_than_50_recipients(serve: Any, http: Any) -> None:
    harness = await start_simulated("postmark", serve, http)
    [outcome] = await harness.adapter.send_batch([outbound(to=MANY)])
    assert isinstance(outcome, Permanent) and outcome.code == "300" and "50 recipients" in outcome.reason


async def test_resend_refuses_more_than_50_to(serve: Any, http: Any) -> None:
    harness = await start_simulated("resend", serve, http)
    [outcome] = await harness.adapter.send_batch([outbound(to=MANY)])
    assert isinstance(outcome, Permanent) and outcome.code == "validation_error"


async def test_resend_batch_over_100_is_a_validation_error(serve: Any, http: Any) -> None:
    harness = await start_simulated("resend", serve, http)
    body = [{"from": "a@acme.test", "to": "b@example.com", "subject": "s", "text": "t"}] * 101
    headers = {"Authorization": "Bearer sim-key"}
    async with http.post(
        harness.adapter.config.base_url + "/emails/batch", json=body, headers=headers
    ) as response:
        assert response.status == 422
        assert (await response.json())["name"] == "validation_error"


async def test_sendgrid_refuses_more_than_1000_recipients_in_one_request(serve: Any, http: Any) -> None:
    harness = await start_simulated("sendgrid", serve, http)
    personalizations = [{"to": [{"email": f"r{i}@example.com"}]} for i in range(1001)]
    body = {
        "personalizations": personalizations,
        "from": {"email": "a@acme.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
    }
    headers = {"Authorization": "Bearer sim-key"}
    async with http.post(
        harness.adapter.config.base_url + "/v3/mail/send", json=body, headers=headers
    ) as response:
        assert response.status == 400
        [error] = (await response.json())["errors"]
        assert error["field"] == "personalizations"


async def test_sendgrid_adapter_splits_at_1000_recipients(serve: Any, http: Any) -> None:
    harness = await start_simulated("sendgrid", serve, http)
    messages = [
        outbound(to=[Address(f"u{i}@example.com"), Address(f"v{i}@example.com")], attachments=[])
        for i in range(600)
    ]
    assert all(isinstance(o, Sent) for o in await harness.adapter.send_batch(messages))
    assert harness.state.requests == 2 and len(harness.state.messages) == 600


async def test_mailgun_unknown_domain_marks_the_server_down(serve: Any, http: Any) -> None:
    harness = await start_simulated("mailgun", serve, http, SimulatorOptions(domain="mg.other.test"))
    [outcome] = await harness.adapter.send_batch([outbound()])
    assert isinstance(outcome, Transient) and outcome.server_down and "Domain not found" in outcome.reason


async def test_accepted_messages_are_listed_over_http(serve: Any, http: Any) -> None:
    harness = await start_simulated("mailgun", serve, http)
    message = outbound()
    await harness.adapter.send_batch([message])
    async with http.get(harness.adapter.config.base_url + "/_sim/messages") as response:
        [listed] = (await response.json())["messages"]
    assert listed["subject"] == message.subject and listed["headers"]["X-Mailers-Message-Id"] == message.id
    async with http.delete(harness.adapter.config.base_url + "/_sim/messages") as response:
        assert response.status == 204
    assert harness.state.messages == []
