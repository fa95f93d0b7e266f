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
