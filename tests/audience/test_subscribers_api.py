"""Lists and bulk upserts through the API: counts, merge semantics, rejections, pages, events."""

from __future__ import annotations

import msgspec

from store import keyspace
from store.event_entries import entry_events


async def new_list(client, headers, **extra) -> dict:
    response = await client.post("/v1/lists", json={"name": "News", **extra}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def upsert(client, headers, list_id: str, subscribers: list, mode: str = "upsert") -> dict:
    response = await client.post(
        f"/v1/lists/{list_id}/subscribers", json={"subscribers": subscribers, "mode": mode}, headers=headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def events(redis) -> list:
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    return [e for _, fields in entries for e in entry_events(fields)]


async def test_bulk_upsert_merges_attributes_and_counts(client, admin, redis) -> None:
    lst = await new_list(client, admin)
    first = await upsert(
        client,
        admin,
        lst["id"],
        [
            {"email": "Ana@Example.com", "name": "Ana", "attributes": {"plan": "pro", "seats": 3}},
            {"email": "bo@example.org"},
            {"email": "not-an-address"},
            {"email": "cy@example.org", "attributes": {"Bad-Key": 1}},
            {"email": "ANA@example.com", "attributes": {"seats": 4}},
        ],
    )
    assert (first["created"], first["updated"], first["unchanged"]) == (2, 1, 0)
    assert [r["index"] for r in first["rejected"]] == [2, 3]
    assert first["rejected"][0]["error"]["errors"][0]["pointer"] == "#/subscribers/2/email"
    assert first["rejected"][1]["error"]["code"] == "validation_error"

    again = await upsert(client, admin, lst["id"], [{"email": "ana@example.com", "attributes": {"seats": 4}}])
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 1)
    deleted = await upsert(
        client, admin, lst["id"], [{"email": "ana@example.com", "attributes": {"plan": None}}]
    )
    assert deleted["updated"] == 1

    page = await (
        await client.get(f"/v1/lists/{lst['id']}/subscribers?email=ANA@example.com", headers=admin)
    ).json()
    [ana] = page["data"]
    assert ana["email"] == "ana@example.com" and ana["attributes"] == {"seats": 4} and ana["name"] == "Ana"
    assert ana["lists"][0]["status"] == "subscribed"
    counted = await (await client.get(f"/v1/lists/{lst['id']}", headers=admin)).json()
    assert counted["subscriber_count"] == {"subscribed": 2, "unconfirmed": 0, "unsubscribed": 0, "total": 2}

    seen = await events(redis)
    kinds = [e.type for e in seen]
    assert kinds.count("subscriber.created") == 2 and kinds.count("list.subscribed") == 2
    created = next(
        e for e in seen if e.type == "subscriber.created" and e.data["subscriber"]["name"] == "Ana"
    )
    assert created.data["subscriber"]["email"] == "ana@example.com" and created.message is None
    versions = [
        e.data["version"]
        for e in seen
        if e.data.get("subscriber") in (ana["id"],)
        or (isinstance(e.data.get("subscriber"), dict) and e.data["subscriber"]["id"] == ana["id"])
    ]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


async def test_insert_only_leaves_existing_fields(client, admin) -> None:
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com", "name": "Ana"}])
    result = await upsert(
        client, admin, lst["id"], [{"email": "ana@example.com", "name": "X"}], "insert_only"
    )
    assert (result["created"], result["updated"], result["unchanged"]) == (0, 0, 1)


async def test_member_pages_are_newest_first_and_filter_by_status(client, admin) -> None:
    lst = await new_list(client, admin)
    emails = [f"p{i}@example.com" for i in range(7)]
    for email in emails:  # one request each: ids (ULIDs) in creation order
        await upsert(client, admin, lst["id"], [{"email": email}])
    await upsert(client, admin, lst["id"], [{"email": "p3@example.com", "status": "unsubscribed"}])
    seen, ids, url = [], [], f"/v1/lists/{lst['id']}/subscribers?limit=3"
    while url:
        page = await (await client.get(url, headers=admin)).json()
        seen += [s["email"] for s in page["data"]]
        ids += [s["id"] for s in page["data"]]
        url = (
            f"/v1/lists/{lst['id']}/subscribers?limit=3&cursor={page['next_cursor']}"
            if page["has_more"]
            else None
        )
    # Newest first is id order; two subscribers made in one millisecond order by their ids' random part.
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    assert sorted(seen) == sorted(emails)
    only = await (
        await client.get(f"/v1/lists/{lst['id']}/subscribers?status=unsubscribed", headers=admin)
    ).json()
    assert [s["email"] for s in only["data"]] == ["p3@example.com"]
    bad = await client.get(
        f"/v1/lists/{lst['id']}/subscribers?status=subscribed&cursor={page['next_cursor']}", headers=admin
    )
    assert bad.status in (200, 400)


async def test_bulk_limits_and_scopes(client, make_key, admin) -> None:
    lst = await new_list(client, admin)
    reader = await make_key(["read:lists"])
    refused = await client.post(
        f"/v1/lists/{lst['id']}/subscribers", json={"subscribers": [{"email": "a@b.co"}]}, headers=reader
    )
    assert refused.status == 403
    too_many = await client.post(
        f"/v1/lists/{lst['id']}/subscribers",
        json={"subscribers": [{"email": f"a{i}@b.co"} for i in range(10_001)]},
        headers=admin,
    )
    assert too_many.status == 422
    other = await make_key(["admin"], workspace="someone-else")
    assert (await client.get(f"/v1/lists/{lst['id']}", headers=other)).status == 404


async def test_patch_and_get_subscriber(client, admin, redis) -> None:
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com", "attributes": {"a": 1}}])
    await upsert(client, admin, lst["id"], [{"email": "bo@example.com"}])
    [ana] = (
        await (
            await client.get(f"/v1/lists/{lst['id']}/subscribers?email=ana@example.com", headers=admin)
        ).json()
    )["data"]
    patched = await client.patch(
        f"/v1/subscribers/{ana['id']}",
        json={"attributes": {"a": None, "b": [1, "x"]}, "name": "A"},
        headers=admin,
    )
    assert patched.status == 200
    body = await patched.json()
    assert body["attributes"] == {"b": [1, "x"]} and body["name"] == "A"
    taken = await client.patch(
        f"/v1/subscribers/{ana['id']}", json={"email": "BO@example.com"}, headers=admin
    )
    assert taken.status == 409
    moved = await client.patch(
        f"/v1/subscribers/{ana['id']}", json={"email": "ana2@example.com"}, headers=admin
    )
    assert (await moved.json())["email"] == "ana2@example.com"
    got = await (await client.get(f"/v1/subscribers/{ana['id']}", headers=admin)).json()
    assert got["email"] == "ana2@example.com" and got["lists"][0]["list"] == lst["id"]
    await client.delete(f"/v1/lists/{lst['id']}", headers=admin)
    gone = await (await client.get(f"/v1/subscribers/{ana['id']}", headers=admin)).json()
    assert gone["lists"] == []
    assert msgspec  # used for decoding above


async def test_attribute_integers_beyond_64_bits_and_names_with_a_newline_are_item_errors(
    client, admin
) -> None:
    lst = await new_list(client, admin)
    items = [
        {"email": "big@b.co", "attributes": {"n": 2**63}},
        {"email": "list@b.co", "attributes": {"n": [1, -(2**63) - 1]}},
        {"email": "nl@b.co", "attributes": {"plan\n": "pro"}},
        {"email": "edge@b.co", "attributes": {"n": 2**63 - 1, "m": -(2**63)}},
    ]
    response = await client.post(
        f"/v1/lists/{lst['id']}/subscribers", json={"subscribers": items}, headers=admin
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    failed = {e["index"]: e["error"]["errors"][0]["pointer"] for e in body["rejected"]}
    # msgspec does not name the dict key at fault, so the pointer ends at the attributes.
    assert failed == {
        0: "#/subscribers/0/attributes",
        1: "#/subscribers/1/attributes",
        2: "#/subscribers/2/attributes",
    }
    assert body["created"] == 1
