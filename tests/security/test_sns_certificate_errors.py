"""Finding (issue #11): SNS certificates were fetched from any URL and the fetch error came back in the 503's
detail: "an unauthenticated SSRF and port scanner through the 503 detail". The route-level half of it:
whatever the fetch met (a closed port, a server answering 404 with its own text), the answer is the same
fixed detail; the error stays in the ingress's log."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ingress.app import create_app
from ingress.context import SERVICES
from ingress.routes.inbound import CERT_UNAVAILABLE_DETAIL
from schemas.ids import new_id
from store.redis_server import free_port
from tests.conftest import make_settings
from tests.domains_inbound.helpers import create_server
from tests.inbound.payloads import SES_EVENTS, TOPIC_ARN, sns_notification
from tests.inbound.signing import rsa_key, sns_sign


async def _internal_banner(request: web.Request) -> web.Response:
    return web.Response(status=404, text="internal-admin-console v1.2 banner")


async def test_an_unfetchable_certificate_is_answered_without_the_fetch_error(
    aiohttp_client, aiohttp_server, tmp_path, redis_url, redis
):
    banner = web.Application()
    banner.router.add_get("/{tail:.*}", _internal_banner)
    answering = str((await aiohttp_server(banner)).make_url("/"))
    closed_port = free_port()
    closed = f"http://127.0.0.1:{closed_port}/"
    settings = make_settings(tmp_path, redis_url)
    client = await aiohttp_client(create_app(settings, redis_url=redis_url, gateway=None))
    services = client.app[SERVICES]  # the operator trusts both, so the fetch is tried
    services.settings = msgspec.structs.replace(
        services.settings, sns_trusted_url_prefixes=(answering, closed)
    )
    server_id = new_id("srv")
    await create_server(
        redis,
        "amazon-ses",
        workspace=f"ws-{server_id[-8:].lower()}",
        server_id=server_id,
        config={"region": "us-east-1"},
        inbound={
            "sns_topic_arn": TOPIC_ARN,
            "sns_trust": {"allow_aws_hosts": False, "url_prefixes": [answering, closed]},
        },
    )
    answers = []
    for base in (answering, closed):
        envelope = sns_sign(sns_notification(SES_EVENTS["Delivery"], base + "cert.pem"), rsa_key())
        response = await client.post(
            f"/v1/inbound/amazon-ses/{server_id}",
            data=msgspec.json.encode(envelope),
            headers={"Content-Type": "text/plain; charset=UTF-8"},
        )
        assert response.status == 503, await response.text()
        answers.append(await response.text())
    details = [msgspec.json.decode(a)["detail"] for a in answers]
    assert details == [CERT_UNAVAILABLE_DETAIL, CERT_UNAVAILABLE_DETAIL]
    for answer in answers:
        assert "banner" not in answer and "404" not in answer and str(closed_port) not in answer
        assert "refused" not in answer.lower() and "connect" not in answer.lower()
