"""Keys: scopes, workspace isolation, revocation everywhere within a second, rotation, hashing."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from ingress.app import ROUTE_TABLES
from ingress.auth import require_sending_domain
from ingress.context import SERVICES, Principal
from ingress.problems import ApiError
from schemas.api_keys import SCOPES, grants
from store.api_keys import new_record

SCOPED_ROUTES = [spec for table in ROUTE_TABLES for spec in table.specs if spec.scope is not None]


# What each scoped route answers to an admitted key with an empty body and ids that do not exist: the
# handler ran (past auth) and refused the request on its merits. The analytics and audit reads answer 200
# where the session's Ray runs the event or audit sink (another test may have started it), else 503
# (STORE_READS). A new scoped route must be added here.
STORE_READS = {
    ("GET", "/v1/analytics/events"): "analytics",
    ("GET", "/v1/analytics/summary"): "analytics",
    ("GET", "/v1/audit-logs"): "audit",
}
ADMITTED_STATUS = {
    ("GET", "/v1/analytics/events"): 503,
    ("GET", "/v1/analytics/summary"): 503,
    ("POST", "/v1/api-keys"): 422,
    ("GET", "/v1/api-keys"): 200,
    ("GET", "/v1/api-keys/{id}"): 404,
    ("POST", "/v1/api-keys/{id}/rotate"): 404,
    ("DELETE", "/v1/api-keys/{id}"): 404,
    ("GET", "/v1/audit-logs"): 503,
    ("POST", "/v1/events"): 422,
    ("POST", "/v1/segments"): 422,
    ("GET", "/v1/segments"): 200,
    ("GET", "/v1/segments/{id}"): 404,
    ("PATCH", "/v1/segments/{id}"): 404,
    ("DELETE", "/v1/segments/{id}"): 404,
    ("GET", "/v1/segments/{id}/count"): 404,
    ("GET", "/v1/segments/{id}/subscribers"): 404,
    ("GET", "/v1/audit-logs/public-key"): 200,
    ("POST", "/v1/lists"): 422,
    ("GET", "/v1/lists"): 200,
    ("GET", "/v1/lists/{id}"): 404,
    ("PATCH", "/v1/lists/{id}"): 404,
    ("DELETE", "/v1/lists/{id}"): 404,
    ("POST", "/v1/lists/{id}/subscribers"): 422,
    ("GET", "/v1/lists/{id}/subscribers"): 404,
    ("DELETE", "/v1/lists/{id}/subscribers/{sid}"): 404,
    ("POST", "/v1/lists/{id}/imports"): 415,
    ("GET", "/v1/lists/{id}/imports/{imp}"): 404,
    ("GET", "/v1/lists/{id}/imports/{imp}/errors"): 404,
    ("GET", "/v1/subscribers/{id}"): 404,
    ("PATCH", "/v1/subscribers/{id}"): 404,
    ("DELETE", "/v1/subscribers/{id}"): 404,
    ("GET", "/v1/audit-logs/checkpoints"): 200,
    ("GET", "/v1/messages/{id}"): 404,
    ("GET", "/v1/messages"): 200,
    ("POST", "/v1/messages/{id}/cancel"): 404,
    ("POST", "/v1/routing/rules"): 422,
    ("GET", "/v1/routing/rules"): 200,
    ("GET", "/v1/routing/rules/{id}"): 404,
    ("PATCH", "/v1/routing/rules/{id}"): 404,
    ("DELETE", "/v1/routing/rules/{id}"): 404,
    ("POST", "/v1/send"): 422,
    ("POST", "/v1/send/bulk"): 422,
    ("POST", "/v1/sending-domains"): 422,
    ("GET", "/v1/sending-domains"): 200,
    ("GET", "/v1/sending-domains/{id}"): 404,
    ("DELETE", "/v1/sending-domains/{id}"): 404,
    ("POST", "/v1/sending-domains/{id}/verify"): 404,
    ("POST", "/v1/sending-servers"): 422,
    ("GET", "/v1/sending-servers"): 200,
    ("GET", "/v1/sending-servers/{id}"): 404,
    ("PATCH", "/v1/sending-servers/{id}"): 404,
    ("DELETE", "/v1/sending-servers/{id}"): 404,
    ("POST", "/v1/suppressions"): 422,
    ("GET", "/v1/suppressions"): 200,
    ("DELETE", "/v1/suppressions/{email}"): 404,
    ("POST", "/v1/templates"): 422,
    ("GET", "/v1/templates"): 200,
    ("GET", "/v1/templates/{id}"): 404,
    ("PATCH", "/v1/templates/{id}"): 404,
    ("DELETE", "/v1/templates/{id}"): 404,
    ("GET", "/v1/templates/{id}/versions"): 404,
    ("POST", "/v1/templates/{id}/render"): 404,
    ("POST", "/v1/webhooks"): 422,
    ("GET", "/v1/webhooks"): 200,
    ("GET", "/v1/webhooks/{id}"): 404,
    ("PATCH", "/v1/webhooks/{id}"): 404,
    ("DELETE", "/v1/webhooks/{id}"): 404,
    ("POST", "/v1/webhooks/{id}/rotate-secret"): 404,
    ("GET", "/v1/webhooks/{id}/deliveries"): 404,
    ("POST", "/v1/webhooks/{id}/deliveries/{dlv}/replay"): 404,
    ("POST", "/v1/webhooks/{id}/replay"): 422,
    ("POST", "/v1/campaigns"): 422,
    ("GET", "/v1/campaigns"): 200,
    ("GET", "/v1/campaigns/{id}"): 404,
    ("PATCH", "/v1/campaigns/{id}"): 404,
    ("POST", "/v1/campaigns/{id}/launch"): 404,
    ("POST", "/v1/campaigns/{id}/pause"): 404,
    ("POST", "/v1/campaigns/{id}/resume"): 404,
    ("POST", "/v1/campaigns/{id}/cancel"): 404,
    ("GET", "/v1/campaigns/{id}/recipients"): 404,
    ("POST", "/v1/campaigns/{id}/retry-failed"): 404,
    ("GET", "/v1/campaigns/{id}/report"): 404,
    ("POST", "/v1/automations"): 422,
    ("GET", "/v1/automations"): 200,
    ("GET", "/v1/automations/{id}"): 404,
    ("PATCH", "/v1/automations/{id}"): 404,
    ("DELETE", "/v1/automations/{id}"): 404,
    ("POST", "/v1/automations/{id}/activate"): 404,
    ("POST", "/v1/automations/{id}/pause"): 404,
    ("POST", "/v1/automations/{id}/trigger"): 422,
    ("GET", "/v1/automations/{id}/runs"): 404,
    ("GET", "/v1/automations/{id}/runs/{run}"): 404,
    ("POST", "/v1/automations/{id}/runs/{run}/cancel"): 404,
}


def test_every_scoped_route_has_an_admitted_status():
    assert {(s.method, s.path) for s in SCOPED_ROUTES} == set(ADMITTED_STATUS)


def _concrete(spec) -> str:
    """The route's path with well-formed ids that exist nowhere, so the handler itself runs."""

    def fill(match: re.Match[str]) -> str:
        prefix = spec.ids.get(match.group(1))
        return f"{prefix}_{'0' * 26}" if prefix else "x_00000000000000000000000000"

    return re.sub(r"\{([^}]+)\}", fill, spec.path)


def _lacking(scope: str) -> list[str]:
    """Every scope that grants none of the route's alternatives (`send|write:events`)."""
    return [s for s in SCOPES if not any(grants({s}, one) for one in scope.split("|"))]


@pytest.mark.parametrize("spec", SCOPED_ROUTES, ids=lambda s: f"{s.method} {s.path}")
async def test_each_route_refuses_a_key_without_its_scope(client, make_key, spec):
    headers = await make_key(_lacking(spec.scope))
    response = await client.request(spec.method, _concrete(spec), headers=headers, json={})
    assert response.status == 403, await response.text()
    assert (await response.json())["code"] == "forbidden"


@pytest.mark.parametrize("spec", SCOPED_ROUTES, ids=lambda s: f"{s.method} {s.path}")
async def test_each_route_admits_a_key_with_exactly_its_scope(client, make_key, spec):
    for scope in spec.scope.split("|"):
        headers = await make_key([scope])
        response = await client.request(spec.method, _concrete(spec), headers=headers, json={})
        assert response.status == _admitted_status(client, spec), await response.text()


def _admitted_status(client, spec) -> int:
    store = STORE_READS.get((spec.method, spec.path))
    if store is None:
        return ADMITTED_STATUS[(spec.method, spec.path)]
    gateway = client.app[SERVICES].gateway
    reader = gateway.analytics_reader() if store == "analytics" else gateway.audit_reader()
    return 503 if reader is None else 200


def test_scope_implications():
    assert grants({"write:lists"}, "read:lists")
    assert not grants({"read:lists"}, "write:lists")
    assert grants({"admin"}, "send") and grants({"admin"}, "write:webhooks")
    assert not grants({"send"}, "read:messages")


async def test_another_workspaces_key_is_not_found(client, make_key):
    ours = await make_key(["admin"], workspace="acme")
    theirs = await make_key(["admin"], workspace="globex")
    created = await (
        await client.post("/v1/api-keys", json={"name": "a", "scopes": ["send"]}, headers=ours)
    ).json()
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
        response = await client.request(
            method, f"/v1/api-keys/{created['id']}{path}", headers=theirs, json={}
        )
        assert response.status == 404 and (await response.json())["code"] == "not_found"
    listed = await (await client.get("/v1/api-keys", headers=theirs)).json()
    assert created["id"] not in [k["id"] for k in listed["data"]]
    assert (await client.get(f"/v1/api-keys/{created['id']}", headers=ours)).status == 200


async def test_revocation_reaches_a_second_app_within_a_second(app_client, admin):
    first, second = await app_client(), await app_client()
    created = await (
        await first.post("/v1/api-keys", json={"name": "r", "scopes": ["admin"]}, headers=admin)
    ).json()
    victim = {"Authorization": f"Bearer {created['secret']}"}
    assert (await second.get("/v1/api-keys", headers=victim)).status == 200  # now cached in the second app
    assert (await first.delete(f"/v1/api-keys/{created['id']}", headers=admin)).status == 200
    started = time.monotonic()
    while (await second.get("/v1/api-keys", headers=victim)).status != 401:
        assert time.monotonic() - started < 1.0, "revoked key still accepted by the second app after 1 s"
        await asyncio.sleep(0.02)


def step_clock(client, seconds: float) -> None:
    """Move the app's auth clock forward: expiry and grace periods pass without waiting for them."""
    services = client.app[SERVICES]
    now = services.clock()
    services.clock = lambda: now + seconds


async def test_rotation_keeps_the_old_key_for_the_grace_period(client, admin):
    created = await (
        await client.post("/v1/api-keys", json={"name": "r", "scopes": ["admin"]}, headers=admin)
    ).json()
    old = {"Authorization": f"Bearer {created['secret']}"}
    rotated = await client.post(
        f"/v1/api-keys/{created['id']}/rotate", json={"grace_period_seconds": 1}, headers=admin
    )
    assert rotated.status == 201
    new_key = await rotated.json()
    assert new_key["secret"] != created["secret"] and new_key["scopes"] == ["admin"]
    old_view = await (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()
    assert old_view["state"] == "rotating" and old_view["replaced_by"] == new_key["id"]
    assert (await client.get("/v1/api-keys", headers=old)).status == 200
    assert (
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {new_key['secret']}"})
    ).status == 200
    step_clock(client, 1.5)  # past the 1 s grace period
    assert (await client.get("/v1/api-keys", headers=old)).status == 401
    assert (
        await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {new_key['secret']}"})
    ).status == 200
    again = await client.post(f"/v1/api-keys/{created['id']}/rotate", json={}, headers=admin)
    assert again.status == 422


async def test_expired_key_is_refused(client, admin):
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 10))
    created = await client.post(
        "/v1/api-keys", json={"name": "e", "scopes": ["admin"], "expires_at": soon}, headers=admin
    )
    headers = {"Authorization": f"Bearer {(await created.json())['secret']}"}
    assert (await client.get("/v1/api-keys", headers=headers)).status == 200
    step_clock(client, 5)  # expires_at is 9-10 s ahead (whole seconds)
    assert (await client.get("/v1/api-keys", headers=headers)).status == 200
    step_clock(client, 6)
    assert (await client.get("/v1/api-keys", headers=headers)).status == 401


async def test_secrets_are_stored_only_as_hashes(client, admin, redis):
    created = await (
        await client.post("/v1/api-keys", json={"name": "h", "scopes": ["send"]}, headers=admin)
    ).json()
    secret = created["secret"].encode()
    async for key in redis.scan_iter():
        assert secret not in key
        kind = (await redis.type(key)).decode()
        read = {
            "string": redis.get,
            "hash": redis.hgetall,
            "zset": lambda k: redis.zrange(k, 0, -1),
            "stream": redis.xrange,
        }[kind]
        assert secret not in repr(await read(key)).encode()
    listed = await (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()
    assert "secret" not in listed and listed["prefix"] == created["secret"][:11]


async def test_usage_is_counted_through_the_actor(client, admin):
    created = await (
        await client.post("/v1/api-keys", json={"name": "u", "scopes": ["admin"]}, headers=admin)
    ).json()
    headers = {"Authorization": f"Bearer {created['secret']}"}
    for _ in range(5):
        assert (await client.get("/v1/api-keys", headers=headers)).status == 200
    deadline = time.monotonic() + 5
    while True:
        view = await (await client.get(f"/v1/api-keys/{created['id']}", headers=admin)).json()
        if view["use_count"] == 5:
            break
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)
    assert view["last_used_at"] is not None


def test_domain_restricted_key():
    record = new_record("acme", "d", ["send"], secret="mk_" + "x" * 30, domains=["acme.com"])
    principal = Principal(key=record, scopes=frozenset(record.scopes))
    require_sending_domain(principal, "acme.com")
    require_sending_domain(principal, "mail.acme.com")
    with pytest.raises(ApiError) as refused:
        require_sending_domain(principal, "evil.com")
    assert refused.value.status == 403
    with pytest.raises(ApiError):
        require_sending_domain(principal, "notacme.com")
