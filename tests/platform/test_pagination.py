"""Cursor pagination: newest first, stable while items are added, Link header, filter-bound cursors."""

from __future__ import annotations

import pytest

from ingress.pagination import decode_cursor, encode_cursor
from ingress.problems import ApiError


async def test_pages_are_newest_first_and_stable_while_keys_are_added(client, admin):
    created = []
    for i in range(25):
        response = await client.post(
            "/v1/api-keys", json={"name": f"k{i}", "scopes": ["send"]}, headers=admin
        )
        created.append((await response.json())["id"])
    seen: list[str] = []
    url = "/v1/api-keys?limit=10"
    pages = 0
    while url:
        response = await client.get(url, headers=admin)
        body = await response.json()
        seen.extend(k["id"] for k in body["data"])
        pages += 1
        if pages == 1:  # a key created mid-way must not shift later pages
            await client.post("/v1/api-keys", json={"name": "late", "scopes": ["send"]}, headers=admin)
        if body["has_more"]:
            assert (
                response.headers["Link"]
                == f'<{url.split("?")[0]}?limit=10&cursor={body["next_cursor"]}>; rel="next"'
            )
            url = response.headers["Link"][1:].split(">")[0]
        else:
            assert body["next_cursor"] is None and "Link" not in response.headers
            url = ""
    assert pages == 3
    # Newest first is id order (ULIDs: time, then random): two keys made in one millisecond are in the order
    # of their random parts, not of their creation, so the expected order is the ids' own.
    assert seen == sorted(created, reverse=True) + [seen[-1]] and len(seen) == 26 and len(set(seen)) == 26


def test_cursor_is_bound_to_its_filters():
    cursor = encode_cursor("key_01", {"status": "active"})
    assert decode_cursor(cursor, {"status": "active"}) == "key_01"
    with pytest.raises(ApiError) as refused:
        decode_cursor(cursor, {"status": "revoked"})
    assert refused.value.code == "invalid_cursor" and refused.value.status == 400
