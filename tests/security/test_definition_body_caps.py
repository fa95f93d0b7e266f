"""Routes that take a definition with free-form JSON (a segment filter, a server config) cap their body
at DEFINITION_MAX_BODY, which bounds what decoding it can cost the event loop (issue #11)."""

from __future__ import annotations

import pytest

from ingress.routing import DEFINITION_MAX_BODY

FILLER = [[]] * (DEFINITION_MAX_BODY // 3)  # `[],` per item: just over the cap as JSON


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/segments", {"name": "s", "lists": [], "filter": {"all": FILLER}}),
        ("/v1/sending-servers", {"name": "s", "provider": "smtp", "config": {"host": "x", "pad": FILLER}}),
    ],
)
async def test_a_definition_over_the_cap_is_refused_unread(client, admin, path, body):
    response = await client.post(path, json=body, headers=admin)
    assert response.status == 413, await response.text()
    assert (await response.json())["code"] == "payload_too_large"
