"""An SMTP sending server signs with the workspace's verified sending domain: the DKIM key the
Dispatcher hands the adapter (`DomainSigners` in `actors/dispatch/body.py`) makes a signature that
dkimpy verifies against the TXT record the domain published; mail from another domain goes unsigned."""

from __future__ import annotations

from typing import Any

import dkim

from actors.dispatch.body import SIGNER_CACHE_SECONDS, DomainSigners
from schemas.settings import load_settings
from store.domains import box_for
from tests.pipeline.conftest import create_smtp_server, wait_for
from tests.smtp.dns_server import DnsServer, DnsZone
from tests.smtp.sink import SmtpSink

from .helpers import message, send, wait_for_status


def published(view: dict[str, Any]) -> DnsZone:
    return DnsZone({(r["name"], r["type"]): [r["value"]] for r in view["records"]})


async def verified_domain(app_client, client, headers: dict[str, str], domain: str) -> dict[str, Any]:
    response = await client.post("/v1/sending-domains", json={"domain": domain}, headers=headers)
    assert response.status == 201, await response.text()
    view = await response.json()
    async with DnsServer(published(view)) as dns_server:
        checking = await app_client(dns_nameserver=dns_server.host, dns_port=dns_server.port)
        checked = await checking.post(f"/v1/sending-domains/{view['id']}/verify", headers=headers)
        assert checked.status == 200, await checked.text()
        assert (await checked.json())["status"] == "verified"
    return view


async def test_smtp_mail_is_signed_by_the_verified_sending_domain(app_client, client, admin) -> None:
    view = await verified_domain(app_client, client, admin, "acme.test")
    [key_record] = [r for r in view["records"] if r["purpose"] == "dkim"]

    def dns_txt(name: bytes, timeout: int = 5) -> bytes:
        return key_record["value"].encode() if name.decode().rstrip(".") == key_record["name"] else b""

    with SmtpSink() as sink:
        server = await create_smtp_server(client, admin, sink.port)
        signed = await send(client, admin, message("ana@example.com", routing={"server": server["id"]}))
        unsigned = await send(
            client,
            admin,
            message(
                "bo@example.com", routing={"server": server["id"]}, **{"from": "Other <hello@other.test>"}
            ),
        )
        await wait_for(lambda: len(sink.deliveries) == 2)
        await wait_for_status(client, admin, signed, "sent")
        await wait_for_status(client, admin, unsigned, "sent")
    by_recipient = {d.rcpt_tos[0]: d for d in sink.deliveries}
    content = by_recipient["ana@example.com"].content
    assert dkim.verify(content, dnsfunc=dns_txt)
    assert not dkim.verify(content.replace(b"Hello", b"Hullo"), dnsfunc=dns_txt)
    signature = by_recipient["ana@example.com"].parsed()["DKIM-Signature"]
    assert "d=acme.test" in signature and "s=mailers" in signature
    assert by_recipient["bo@example.com"].parsed()["DKIM-Signature"] is None


async def test_signers_are_looked_up_once_per_domain_for_a_while(
    app_client, client, admin, redis, workspace
) -> None:
    view = await verified_domain(app_client, client, admin, "cache.test")
    now = [0.0]
    box = box_for(load_settings({}, secret_key="s" * 40))  # tests/conftest.py's app secret
    signers = DomainSigners(redis, box, workspace, clock=lambda: now[0])
    signer = await signers("news.cache.test")
    assert signer is not None and signer.domain == "cache.test"  # the verified parent signs a subdomain
    assert await signers("other.test") is None
    deleted = await client.delete(f"/v1/sending-domains/{view['id']}", headers=admin)
    assert deleted.status == 200, await deleted.text()
    assert await signers("news.cache.test") is signer  # still the cached answer
    now[0] = SIGNER_CACHE_SECONDS + 0.1
    assert await signers("news.cache.test") is None
