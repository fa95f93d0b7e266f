"""Every error path answers application/problem+json with the documented status and code."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from schemas.problems import ERROR_CODES


async def problem(response, status: int, code: str) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["request_id"] == response.headers["Request-Id"]
    return body


async def test_unknown_route_is_404(client):
    await problem(await client.get("/v1/nope"), 404, "not_found")


async def test_wrong_method_is_405_with_allow(client, admin):
    response = await client.put("/v1/api-keys", headers=admin)
    await problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]


async def test_missing_and_unknown_keys_are_401(client):
    await problem(await client.get("/v1/api-keys"), 401, "unauthorized")
    response = await client.get("/v1/api-keys", headers={"Authorization": "Bearer mk_nope"})
    await problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await problem(
        await client.get("/v1/api-keys", headers={"Authorization": "Basic abc"}), 401, "unauthorized"
    )


async def test_auth_is_decided_before_the_body_is_read(client, make_key):
    # A 401/403 never looks at the body: invalid JSON from an unauthorised caller is still 401/403.
    await problem(await client.post("/v1/api-keys", data=b"{not json"), 401, "unauthorized")
    sender = await make_key(["send"])
    await problem(await client.post("/v1/api-keys", data=b"{not json", headers=sender), 403, "forbidden")


async def test_invalid_json_is_400(client, admin):
    headers = {**admin, "Content-Type": "application/json"}
    await problem(await client.post("/v1/api-keys", data=b'{"name": ', headers=headers), 400, "invalid_json")


async def test_non_json_body_is_415(client, admin):
    headers = {**admin, "Content-Type": "text/plain"}
    await problem(
        await client.post("/v1/api-keys", data=b"name=x", headers=headers), 415, "unsupported_media_type"
    )


async def test_validation_errors_point_at_the_field(client, admin):
    response = await client.post("/v1/api-keys", json={"name": "x", "scopes": ["send", 7]}, headers=admin)
    body = await problem(response, 422, "validation_error")
    assert body["errors"][0]["pointer"] == "#/scopes/1"
    response = await client.post("/v1/api-keys", json={"scopes": ["send"]}, headers=admin)
    assert (await problem(response, 422, "validation_error"))["errors"][0]["pointer"] == "#/name"
    response = await client.post(
        "/v1/api-keys", json={"name": "x", "scopes": ["send"], "color": 1}, headers=admin
    )
    body = await problem(response, 422, "validation_error")
    assert body["errors"][0] == {
        "pointer": "#/color",
        "detail": "Object contains unknown field `color`",
        "code": "unknown_field",
    }
    response = await client.post(
        "/v1/api-keys", json={"name": "x", "scopes": ["write:nothing"]}, headers=admin
    )
    assert (await problem(response, 422, "validation_error"))["errors"][0]["pointer"] == "#/scopes/0"


async def test_bad_query_parameter_is_422_with_pointer(client, admin):
    response = await client.get("/v1/api-keys?limit=500", headers=admin)
    assert (await problem(response, 422, "validation_error"))["errors"][0]["pointer"] == "#/query/limit"


async def test_body_over_the_limit_is_413(app_client, admin):
    client = await app_client(max_body_bytes=1024)
    payload = {"name": "x" * 4000, "scopes": ["send"]}
    await problem(await client.post("/v1/api-keys", json=payload, headers=admin), 413, "payload_too_large")


async def test_unhandled_exception_is_500_without_internals(app_client):
    async def explode(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals: password=hunter2")

    client = await app_client(app_hook=lambda app: app.router.add_get("/boom", explode))
    body = await problem(await client.get("/boom"), 500, "internal_error")
    assert "hunter2" not in str(body) and "RuntimeError" not in str(body)


async def test_rate_limit_is_429_with_headers(app_client, admin):
    client = await app_client(rate_limit_per_second=1.0, rate_limit_burst=3)
    answers = [await client.get("/v1/api-keys", headers=admin) for _ in range(4)]
    assert [a.status for a in answers[:3]] == [200, 200, 200]
    assert answers[0].headers["RateLimit-Policy"] == '"per-key";q=3;w=3'
    assert re.fullmatch(r'"per-key";r=2;t=\d+', answers[0].headers["RateLimit"])
    await problem(answers[3], 429, "rate_limited")
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert answers[3].headers["RateLimit"].startswith('"per-key";r=0;')


async def test_invalid_idempotency_key_is_400(client, admin):
    headers = {**admin, "Idempotency-Key": "x" * 256}
    response = await client.post("/v1/api-keys", json={"name": "x", "scopes": ["send"]}, headers=headers)
    await problem(response, 400, "invalid_idempotency_key")


async def test_invalid_cursor_is_400(client, admin):
    await problem(await client.get("/v1/api-keys?cursor=garbage!!", headers=admin), 400, "invalid_cursor")


def test_every_error_code_is_documented():
    text = (Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", text, flags=re.M))
    assert {code: str(status) for code, (status, _) in ERROR_CODES.items()} == documented
