"""Issue #11 "Tenants can reach the operator's network and credentials": one regression test per finding."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.resolver import ThreadedResolver

from providers import resend, ses
from providers.base import Permanent, Transient
from providers.egress import STRICT, Egress
from providers.inbound import HttpCertFetcher, InboundConfig, InvalidSignature, SnsTrust, parse_inbound
from providers.mailgun import Config as MailgunConfig
from schemas.inbound_config import with_provider_config
from tests.local_egress import LOCAL

from .test_conformance import outbound

SECRET = "AKIAIOSFODNN7EXAMPLE/wJalrXUtnFEMI"


def mailgun_body(base_url: str) -> dict[str, Any]:
    config = {"api_key": "key-1", "domain": "mg.acme.com", "base_url": base_url}
    return {"name": "MG", "provider": "mailgun", "config": config}


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8025", "http://169.254.169.254/latest", "http://10.1.2.3", "http://[::1]/"]
)
async def test_sending_server_base_url_ssrf_refused_at_save(app_client, admin, base_url: str) -> None:
    client = await app_client(allow_private_targets=False)
    response = await client.post("/v1/sending-servers", json=mailgun_body(base_url), headers=admin)
    assert response.status == 422
    [error] = (await response.json())["errors"]
    assert (error["code"], error["pointer"]) == ("server_target_private_address", "#/config/base_url")


async def test_smtp_host_resolving_to_loopback_refused_at_save(app_client, admin) -> None:
    client = await app_client(allow_private_targets=False)
    body = {"name": "Relay", "provider": "smtp", "config": {"host": "localhost.", "port": 25}}
    response = await client.post("/v1/sending-servers", json=body, headers=admin)
    assert response.status == 422


async def test_metadata_address_refused_even_when_private_targets_are_allowed(app_client, admin) -> None:
    client = await app_client(allow_private_targets=True)
    response = await client.post(
        "/v1/sending-servers", json=mailgun_body("http://169.254.169.254"), headers=admin
    )
    assert response.status == 422


async def test_dns_rebinding_to_loopback_refused_at_send(monkeypatch, serve) -> None:
    """The name passed the save-time check; at send it resolves to 127.0.0.1 (where a service listens)."""
    app = web.Application()

    async def leak(request: web.Request) -> web.Response:
        return web.json_response({"id": "leaked"})

    app.router.add_post("/emails", leak)
    port = int((await serve(app)).rsplit(":", 1)[1])
    real_resolve = ThreadedResolver.resolve

    async def rebinding(self, host: str, port_: int = 0, family: Any = 0) -> Any:
        if host == "api.rebind.example":
            return await real_resolve(self, "127.0.0.1", port_, family)
        return await real_resolve(self, host, port_, family)

    monkeypatch.setattr(ThreadedResolver, "resolve", rebinding)
    adapter = resend.Adapter(resend.Config(api_key="k", base_url=f"http://api.rebind.example:{port}"))
    try:
        [outcome] = await adapter.send_batch([outbound()])
    finally:
        await adapter.close()
    assert isinstance(outcome, Transient) and outcome.server_down
    assert outcome.reason.startswith("server_target_private_address")


async def test_provider_error_body_is_not_echoed(serve, http) -> None:
    page = f"<html><body>intranet admin\r\n{SECRET}</body></html>" * 50
    app = web.Application()

    async def intranet(request: web.Request) -> web.Response:
        return web.Response(status=500, text=page, content_type="text/html")

    app.router.add_post("/emails", intranet)
    adapter = resend.Adapter(resend.Config(api_key="k", base_url=await serve(app)), http=http, egress=LOCAL)
    [outcome] = await adapter.send_batch([outbound()])
    assert isinstance(outcome, Transient)
    assert SECRET not in outcome.reason and "intranet" not in outcome.reason and len(outcome.reason) < 200
    assert "text/html" in outcome.reason


async def test_provider_json_error_message_is_sanitised_and_capped(serve, http) -> None:
    app = web.Application()
    message = "bad\x1b[31m request\u202e" + "x" * 5000

    async def invalid(request: web.Request) -> web.Response:
        return web.json_response({"message": message}, status=422)

    app.router.add_post("/emails", invalid)
    adapter = resend.Adapter(resend.Config(api_key="k", base_url=await serve(app)), http=http, egress=LOCAL)
    [outcome] = await adapter.send_batch([outbound()])
    assert isinstance(outcome, Permanent) and len(outcome.reason) <= 220
    assert "\x1b" not in outcome.reason and "\u202e" not in outcome.reason


async def test_ses_without_credentials_does_not_use_the_hosts(app_client, admin) -> None:
    adapter = ses.Adapter(ses.Config(region="us-east-1"), egress=STRICT)
    [outcome] = await adapter.send_batch([outbound()])
    assert isinstance(outcome, Permanent) and outcome.code == "server_credentials_required"
    client = await app_client()
    body = {"name": "SES", "provider": "amazon-ses", "config": {"region": "us-east-1"}}
    response = await client.post("/v1/sending-servers", json=body, headers=admin)
    assert response.status == 422
    assert (await response.json())["errors"][0]["code"] == "server_credentials_required"
    allowed = await app_client(allow_ambient_aws_credentials=True)
    assert (await allowed.post("/v1/sending-servers", json=body, headers=admin)).status == 201


async def test_sns_tenant_trust_prefix_cannot_make_the_ingress_fetch(http) -> None:
    fetcher = HttpCertFetcher(http)
    tenant = InboundConfig(
        sns_topic_arn="arn:aws:sns:us-east-1:1:t",
        sns_trust=SnsTrust(allow_aws_hosts=False, url_prefixes=("http://169.254.169.254/",)),
    )
    envelope = (
        b'{"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",'
        b' "Message": "{}",'
        b' "Timestamp": "2024-01-01T00:00:00Z", "SignatureVersion": "1", "Signature": "AA==",'
        b' "SigningCertURL": "http://169.254.169.254/latest/meta-data/cert.pem"}'
    )
    with pytest.raises(InvalidSignature):
        await parse_inbound(
            "amazon-ses",
            headers={},
            body=envelope,
            config=tenant,
            server_id="srv_1",
            now=1.7e9,
            replay_guard=None,
            cert_fetcher=fetcher,
        )
    assert fetcher.downloads == 0


async def test_sns_trust_prefix_outside_operator_trust_refused_at_save(app_client, admin) -> None:
    client = await app_client()
    config = {"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "s"}
    inbound = {"sns_trust": {"url_prefixes": ["http://127.0.0.1:9/"]}}
    body = {"name": "SES", "provider": "amazon-ses", "config": config, "inbound": inbound}
    response = await client.post("/v1/sending-servers", json=body, headers=admin)
    assert response.status == 422
    assert (await response.json())["errors"][0]["code"] == "sns_trust_not_allowed"


async def test_sns_certificates_are_cached_by_url_with_a_ttl(serve, http) -> None:
    hits = []

    async def cert(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"PEM")

    app = web.Application()
    app.router.add_get("/cert.pem", cert)
    url = await serve(app) + "/cert.pem"
    now = [0.0]
    fetcher = HttpCertFetcher(http, ttl=60, clock=lambda: now[0])
    assert await fetcher(url) == await fetcher(url) == b"PEM" and len(hits) == 1
    now[0] = 61
    await fetcher(url)
    assert len(hits) == 2


def test_documented_config_webhook_signing_key_is_read_by_the_verifier() -> None:
    config = MailgunConfig(api_key="k", domain="mg.acme.com", webhook_signing_key="signing-1")
    inbound = with_provider_config(InboundConfig(), "mailgun", config)
    assert inbound.mailgun_signing_key == "signing-1"
    explicit = with_provider_config(InboundConfig(mailgun_signing_key="own"), "mailgun", config)
    assert explicit.mailgun_signing_key == "own"


def test_egress_defaults_are_strict() -> None:
    assert (
        STRICT == Egress() and not STRICT.allow_private_targets and not STRICT.allow_ambient_aws_credentials
    )
