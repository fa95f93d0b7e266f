"""Finding: "Idempotency records are scoped to the workspace, so another key of the same workspace that
guesses an Idempotency-Key replays a response that may carry a secret: scope them to the key."""

from __future__ import annotations

BODY = {"name": "ci", "scopes": ["send"]}


async def test_idempotency_records_are_scoped_to_the_workspace_not_the_key(client, make_key):
    owner, other = await make_key(["admin"]), await make_key(["admin"])
    first = await client.post("/v1/api-keys", json=BODY, headers={**owner, "Idempotency-Key": "guess"})
    assert first.status == 201
    guessed = await client.post("/v1/api-keys", json=BODY, headers={**other, "Idempotency-Key": "guess"})
    assert guessed.status == 201 and "Idempotent-Replayed" not in guessed.headers
    assert (await guessed.json())["secret"] != (await first.json())["secret"]
    # the key that made the request still gets its own answer replayed
    again = await client.post("/v1/api-keys", json=BODY, headers={**owner, "Idempotency-Key": "guess"})
    assert again.headers["Idempotent-Replayed"] == "true" and await again.read() == await first.read()


MESSAGE = {"from": "Acme <hello@acme.com>", "to": "ana@example.com", "subject": "Hi", "text": "Hi"}


async def test_message_keys_derived_from_the_header_are_scoped_to_the_key(client, make_key):
    """The per-message keys derived from the header (`{header}#{index}` in a bulk, the header itself for
    /v1/send) follow the header's own record: another key of the workspace reusing the header sends new
    messages and learns nothing of the first key's (it used to get their ids back)."""
    owner, other = await make_key(["send", "write:settings"]), await make_key(["send"])
    sandbox = {"name": "sandbox", "provider": "sandbox"}
    assert (await client.post("/v1/sending-servers", json=sandbox, headers=owner)).status == 201
    bulk = {"messages": [MESSAGE, {**MESSAGE, "to": "bo@example.com"}]}
    for path, body in (("/v1/send/bulk", bulk), ("/v1/send", MESSAGE)):
        first = await client.post(path, json=body, headers={**owner, "Idempotency-Key": "guess"})
        guessed = await client.post(path, json=body, headers={**other, "Idempotency-Key": "guess"})
        assert first.status == guessed.status == 202, await guessed.text()
        assert "Idempotent-Replayed" not in guessed.headers
        mine, theirs = _ids(await first.json()), _ids(await guessed.json())
        assert len(theirs) == len(mine) and not set(theirs) & set(mine), (path, mine, theirs)
        # the owner's retry is still deduplicated, message by message
        again = await client.post(path, json=body, headers={**owner, "Idempotency-Key": "guess"})
        assert _ids(await again.json()) == mine


async def test_a_bodys_own_idempotency_key_stays_workspace_wide(client, make_key):
    """As documented (API.md): an explicit `idempotency_key` names the message for the whole workspace."""
    owner, other = await make_key(["send", "write:settings"]), await make_key(["send"])
    sandbox = {"name": "sandbox", "provider": "sandbox"}
    assert (await client.post("/v1/sending-servers", json=sandbox, headers=owner)).status == 201
    body = {**MESSAGE, "idempotency_key": "order-42"}
    first = await client.post("/v1/send", json=body, headers=owner)
    second = await client.post("/v1/send", json=body, headers=other)
    assert first.status == second.status == 202
    assert (await second.json())["id"] == (await first.json())["id"]


def _ids(answer: dict) -> list[str]:
    return [item["id"] for item in answer["data"]] if "data" in answer else [answer["id"]]
