"""`/v1/sending-domains` on the real app and Redis, verified against the tiny UDP DNS server, and the
DKIM signer a verified domain hands the SMTP adapter, checked by dkimpy against the published key."""

from __future__ import annotations

from typing import Any

import dkim
import pytest
import redis.asyncio as aioredis

from actors.dispatch.signing import signing_key_for
from schemas.settings import load_settings
from store.domains import DomainStore, box_for
from tests.smtp.dns_server import DnsServer, DnsZone

from .helpers import SECRET_KEY

MESSAGE = (
    b"From: Acme <hello@acme.com>\r\nTo: ana@example.com\r\nSubject: Welcome\r\n"
    b"Date: Mon, 20 May 2024 10:00:00 +0000\r\nMessage-ID: <m1@acme.com>\r\n\r\nHello Ana\r\n"
)


@pytest.fixture
async def writer(make_key, ws: str) -> dict[str, str]:
    return await make_key(["write:settings"], workspace=ws)


async def register(client, headers: dict[str, str], domain: str = "acme.com", **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/sending-domains", json={"domain": domain, **extra}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


def zone_of(view: dict[str, Any], *, leave_out: str | None = None, **replaced: str) -> DnsZone:
    """The records a domain owner published, as the view asked (one purpose left out or changed)."""
    records = {}
    for record in view["records"]:
        if record["purpose"] != leave_out:
            records[(record["name"], record["type"])] = [replaced.get(record["purpose"], record["value"])]
    return DnsZone(records)


async def verify(app_client, headers: dict[str, str], view: dict[str, Any], zone: DnsZone) -> dict[str, Any]:
    async with DnsServer(zone) as dns_server:
        client = await app_client(dns_nameserver=dns_server.host, dns_port=dns_server.port)
        response = await client.post(f"/v1/sending-domains/{view['id']}/verify", headers=headers)
        assert response.status == 200, await response.text()
        return await response.json()


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {r["purpose"]: r["status"] for r in view["records"]}


async def test_register_returns_the_records_to_publish(client, writer) -> None:
    view = await register(client, writer, "Bücher.Example", selector="s2024", return_path="mail-bounces")
    assert view["object"] == "sending_domain" and view["id"].startswith("dom_")
    assert view["domain"] == "xn--bcher-kva.example"
    assert (view["status"], view["verified_at"], view["dkim"]) == ("pending", None, {"selector": "s2024"})
    by_purpose = {r["purpose"]: r for r in view["records"]}
    assert set(by_purpose) == {"dkim", "spf", "dmarc", "return_path"}
    assert by_purpose["dkim"]["name"] == "s2024._domainkey.xn--bcher-kva.example"
    assert by_purpose["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=MII")
    assert by_purpose["spf"] == {
        "type": "TXT",
        "name": "xn--bcher-kva.example",
        "status": "pending",
        "value": "v=spf1 include:_spf.mailers.invalid ~all",
        "purpose": "spf",
        "detail": None,
    }
    assert by_purpose["dmarc"]["name"] == "_dmarc.xn--bcher-kva.example"
    assert by_purpose["return_path"]["type"] == "CNAME"
    assert by_purpose["return_path"]["name"] == "mail-bounces.xn--bcher-kva.example"
    assert by_purpose["return_path"]["value"] == "bounces.mailers.invalid"
    assert all(r["status"] == "pending" for r in view["records"])


async def test_spf_and_return_path_follow_the_public_url(app_client, writer) -> None:
    client = await app_client(public_url="https://mail.example.net")
    view = await register(client, writer)
    by_purpose = {r["purpose"]: r["value"] for r in view["records"]}
    assert by_purpose["spf"] == "v=spf1 include:_spf.mail.example.net ~all"
    assert by_purpose["return_path"] == "bounces.mail.example.net"


async def test_private_key_is_sealed_and_never_returned(
    ws: str, client, writer, redis: aioredis.Redis
) -> None:
    view = await register(client, writer)
    listed = await (await client.get("/v1/sending-domains", headers=writer)).json()
    fetched = await (await client.get(f"/v1/sending-domains/{view['id']}", headers=writer)).json()
    for shown in (view, listed["data"][0], fetched):
        assert "PRIVATE" not in str(shown) and not {"private_key", "sealed_private_key"} & set(shown)
    box = box_for(load_settings({}, secret_key=SECRET_KEY))
    record = await DomainStore(redis, box).get(ws, view["id"])
    assert record is not None
    pem = box.open(record.sealed_private_key, record.id.encode())  # the key is there, sealed
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key_lines = pem.splitlines()[1:-1]
    everything = b"\n".join(await every_value(redis))
    assert b"PRIVATE KEY" not in everything and not any(line in everything for line in key_lines)
    assert record.sealed_private_key.encode() in everything


async def every_value(redis: aioredis.Redis) -> list[bytes]:
    """Every byte string Redis holds, whatever the key's type."""
    values: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        match (await redis.type(key)).decode():
            case "string":
                values.append(await redis.get(key))
            case "hash":
                values += [b for pair in (await redis.hgetall(key)).items() for b in pair]
            case "list":
                values += await redis.lrange(key, 0, -1)
            case "set":
                values += list(await redis.smembers(key))
            case "zset":
                values += await redis.zrange(key, 0, -1)
            case "stream":
                values += [
                    b for _, fields in await redis.xrange(key) for pair in fields.items() for b in pair
                ]
    return values


async def test_all_records_published_verifies(app_client, client, writer) -> None:
    view = await register(client, writer)
    checked = await verify(app_client, writer, view, zone_of(view))
    assert checked["status"] == "verified" and checked["verified_at"] is not None
    assert statuses(checked) == dict.fromkeys(["dkim", "spf", "dmarc", "return_path"], "found")
    again = await (await client.get(f"/v1/sending-domains/{view['id']}", headers=writer)).json()
    assert again["status"] == "verified" and again["checked_at"] == checked["checked_at"]


async def test_a_missing_dkim_record_keeps_it_pending_and_names_it(app_client, client, writer) -> None:
    view = await register(client, writer)
    checked = await verify(app_client, writer, view, zone_of(view, leave_out="dkim"))
    assert checked["status"] == "pending" and checked["verified_at"] is None
    dkim_record = next(r for r in checked["records"] if r["purpose"] == "dkim")
    assert dkim_record["status"] == "missing" and dkim_record["name"] in dkim_record["detail"]
    assert statuses(checked)["spf"] == "found"


async def test_only_dmarc_missing_still_verifies(app_client, client, writer) -> None:
    view = await register(client, writer)
    checked = await verify(app_client, writer, view, zone_of(view, leave_out="dmarc"))
    assert checked["status"] == "verified" and statuses(checked)["dmarc"] == "missing"


async def test_a_wrong_spf_record_fails(app_client, client, writer) -> None:
    view = await register(client, writer)
    checked = await verify(app_client, writer, view, zone_of(view, spf="v=spf1 include:_spf.google.com ~all"))
    assert checked["status"] == "failed"
    spf = next(r for r in checked["records"] if r["purpose"] == "spf")
    assert spf["status"] == "mismatch" and "include:_spf.mailers.invalid" in spf["detail"]


async def test_duplicate_in_a_workspace_conflicts_but_not_across_workspaces(
    ws: str, client, writer, make_key
) -> None:
    first = await register(client, writer, "acme.com")
    response = await client.post("/v1/sending-domains", json={"domain": "ACME.com."}, headers=writer)
    assert response.status == 409
    problem = await response.json()
    assert problem["code"] == "conflict" and first["id"] in problem["detail"]
    other = await make_key(["write:settings"], workspace=ws + "-other")
    assert (await register(client, other, "acme.com"))["id"] != first["id"]


async def test_other_workspaces_see_nothing(ws: str, client, writer, make_key) -> None:
    view = await register(client, writer)
    stranger = await make_key(["write:settings"], workspace=ws + "-other")
    path = f"/v1/sending-domains/{view['id']}"
    assert (await client.get(path, headers=stranger)).status == 404
    assert (await client.post(path + "/verify", headers=stranger)).status == 404
    assert (await client.delete(path, headers=stranger)).status == 404
    assert (await (await client.get("/v1/sending-domains", headers=stranger)).json())["data"] == []
    assert (await client.get(path, headers=writer)).status == 200


async def test_delete_frees_the_name(client, writer) -> None:
    view = await register(client, writer)
    response = await client.delete(f"/v1/sending-domains/{view['id']}", headers=writer)
    assert (response.status, await response.json()) == (
        200,
        {"id": view["id"], "deleted": True, "object": "sending_domain"},
    )
    assert (await client.get(f"/v1/sending-domains/{view['id']}", headers=writer)).status == 404
    assert (await client.delete(f"/v1/sending-domains/{view['id']}", headers=writer)).status == 404
    assert (await register(client, writer))["id"] != view["id"]


async def test_list_pages_newest_first(client, writer) -> None:
    ids = [(await register(client, writer, f"d{i}.example"))["id"] for i in range(3)]
    first = await (await client.get("/v1/sending-domains?limit=2", headers=writer)).json()
    assert [d["id"] for d in first["data"]] == sorted(ids, reverse=True)[:2] and first["has_more"]
    rest = await (
        await client.get(f"/v1/sending-domains?limit=2&cursor={first['next_cursor']}", headers=writer)
    ).json()
    assert [d["id"] for d in rest["data"]] == ids[:1] and not rest["has_more"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"domain": "localhost"}, "#/domain"),
        ({"domain": "bad_name.example"}, "#/domain"),
        ({"domain": "acme.com", "selector": "has space"}, "#/selector"),
        ({"domain": "acme.com", "return_path": "a.b"}, "#/return_path"),
        ({"domain": "acme.com", "private_key": "x"}, "#/private_key"),
    ],
)
async def test_invalid_bodies_are_refused(client, writer, body: dict[str, Any], pointer: str) -> None:
    response = await client.post("/v1/sending-domains", json=body, headers=writer)
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == pointer


async def test_scopes(ws: str, client, make_key) -> None:
    reader = await make_key(["read:settings"], workspace=ws)
    response = await client.post("/v1/sending-domains", json={"domain": "acme.com"}, headers=reader)
    assert response.status == 403
    assert (await client.get("/v1/sending-domains", headers=reader)).status == 200


async def test_a_verified_domain_signs_what_dkim_verify_accepts(
    ws: str, app_client, client, writer, redis: aioredis.Redis
) -> None:
    box = box_for(load_settings({}, secret_key=SECRET_KEY))
    view = await register(client, writer)
    assert await signing_key_for(redis, box, ws, "acme.com") is None  # pending: no signing yet
    assert (await verify(app_client, writer, view, zone_of(view)))["status"] == "verified"
    dkim_record = next(r for r in view["records"] if r["purpose"] == "dkim")

    def published_txt(name: bytes, timeout: int = 5) -> bytes:
        return dkim_record["value"].encode() if name.decode().rstrip(".") == dkim_record["name"] else b""

    signer = await signing_key_for(redis, box, ws, "ACME.com")
    assert signer is not None and (signer.domain, signer.selector) == ("acme.com", "mailers")
    assert dkim.verify(signer.sign(MESSAGE), dnsfunc=published_txt)
    assert not dkim.verify(signer.sign(MESSAGE).replace(b"Hello Ana", b"Hello Bob"), dnsfunc=published_txt)
    # a subdomain without its own record is signed by the verified parent (d=acme.com)
    parent = await signing_key_for(redis, box, ws, "news.acme.com")
    assert parent is not None and parent.domain == "acme.com"
    assert await signing_key_for(redis, box, ws + "-other", "acme.com") is None
    assert await signing_key_for(redis, box, ws, "acme.org") is None
