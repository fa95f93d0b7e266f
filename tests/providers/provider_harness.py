"""Starts one provider adapter against its simulator (or moto for SES) and reads back what arrived."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aioboto3
import aiohttp
from aiohttp import web

from providers.registry import provider_module
from providers.simulators import mailgun, postmark, resend, sendgrid
from providers.simulators.base import (
    SIMULATOR,
    RecordedAttachment,
    RecordedMessage,
    SimulatorOptions,
    SimulatorState,
)
from tests.local_egress import LOCAL

HTTP_PROVIDERS = ("mailgun", "sendgrid", "resend", "postmark")
ALL_PROVIDERS = (*HTTP_PROVIDERS, "amazon-ses")
SIMULATORS = {"mailgun": mailgun, "sendgrid": sendgrid, "resend": resend, "postmark": postmark}
MOTO_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}
SENDING_DOMAIN = "acme.test"


@dataclass
class Harness:
    name: str
    adapter: Any
    app: web.Application | None
    read: Callable[[], Awaitable[list[RecordedMessage]]]

    @property
    def state(self) -> SimulatorState:
        assert self.app is not None
        return self.app[SIMULATOR]


def adapter_config(name: str, base_url: str, key: str, **extra: Any) -> Any:
    config = provider_module(name).Config
    match name:
        case "mailgun":
            return config(api_key=key, domain="mg.acme.test", base_url=base_url, **extra)
        case "postmark":
            return config(server_token=key, base_url=base_url, **extra)
    return config(api_key=key, base_url=base_url, **extra)


async def start_simulated(
    name: str,
    serve: Callable[[web.Application], Awaitable[str]],
    http: aiohttp.ClientSession,
    options: SimulatorOptions | None = None,
    **config: Any,
) -> Harness:
    options = options or SimulatorOptions()
    app = SIMULATORS[name].create_app(options)
    base_url = await serve(app)
    adapter = provider_module(name).Adapter(
        adapter_config(name, base_url, options.api_key, **config), http=http, egress=LOCAL
    )

    async def read() -> list[RecordedMessage]:
        return list(app[SIMULATOR].messages)

    return Harness(name, adapter, app, read)


async def verify_moto_domain(moto_url: str) -> None:
    async with aioboto3.Session(**MOTO_CREDENTIALS).client("ses", endpoint_url=moto_url) as ses:
        await ses.verify_domain_identity(Domain=SENDING_DOMAIN)


def start_ses(moto_url: str, **config: Any) -> Harness:
    ses = provider_module("amazon-ses")
    settings = {
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "endpoint_url": moto_url,
        **config,
    }
    adapter = ses.Adapter(ses.Config(**settings), egress=LOCAL)

    async def read() -> list[RecordedMessage]:
        return await moto_messages(moto_url)

    return Harness("amazon-ses", adapter, None, read)


async def moto_messages(moto_url: str) -> list[RecordedMessage]:
    """What moto's SES recorded, through its introspection endpoint `/moto-api/data.json`."""
    async with aiohttp.ClientSession() as session, session.get(f"{moto_url}/moto-api/data.json") as response:
        data = await response.json(content_type=None)
    ses = data.get("ses", {})
    raw = [_from_raw(m["id"], m["raw_data"]) for m in ses.get("RawMessage", [])]
    simple = [_from_simple(m) for m in ses.get("Message", [])]
    return raw + simple


def _from_simple(message: dict[str, Any]) -> RecordedMessage:
    destinations = message["destinations"]
    return RecordedMessage(
        provider_message_id=message["id"],
        sender=message["source"],
        to=destinations.get("ToAddresses", []),
        cc=destinations.get("CcAddresses", []),
        bcc=destinations.get("BccAddresses", []),
        subject=message["subject"],
        html=message["body"],
        request_path="SendEmail/Simple",
    )


def _from_raw(message_id: str, raw: str) -> RecordedMessage:
    parsed = email.message_from_string(raw, policy=email.policy.default)
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    own = {
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
    return RecordedMessage(
        provider_message_id=message_id,
        sender=str(parsed["From"]),
        to=[str(a) for a in parsed["To"].addresses] if parsed["To"] else [],
        reply_to=[str(a) for a in parsed["Reply-To"].addresses] if parsed["Reply-To"] else [],
        subject=str(parsed["Subject"]),
        html=html.get_content() if html else None,
        text=text.get_content() if text else None,
        headers={k: str(v) for k, v in parsed.items() if k.lower() not in own},
        attachments=[
            RecordedAttachment(part.get_filename() or "", part.get_content_type(), part.get_content())
            for part in parsed.iter_attachments()
        ],
        request_path="SendEmail/Raw",
    )
