"""Issue #11: one request must not hold the ingress event loop, and header fields stay one line."""

from __future__ import annotations

import pytest

from actors.outbound.validation import MAX_TRACKED_HTML_CHARS
from schemas.send import MAX_HEADERS, MAX_REPLY_TO

pytestmark = pytest.mark.ray

MESSAGE = {"from": "Acme <hello@acme.com>", "to": "ana@example.com", "subject": "Hi", "html": "<p>Hi</p>"}


async def _refusal(client, headers, body: dict) -> list[dict]:
    response = await client.post("/v1/send", json=body, headers=headers)
    assert response.status == 422, await response.text()
    return (await response.json())["errors"]


async def test_subject_with_crlf_is_refused(client, admin):
    for subject in ("Hi\r\nBcc: everyone@example.com", "Hi\n", "\rHi"):
        errors = await _refusal(client, admin, {**MESSAGE, "subject": subject})
        assert [(e["pointer"], e["code"]) for e in errors] == [("#/subject", "line_break")]


async def test_attachment_names_with_line_breaks_are_refused(client, admin):
    attachment = {"filename": "a.pdf\r\nX-Evil: 1", "content": "aGk="}
    errors = await _refusal(client, admin, {**MESSAGE, "attachments": [attachment]})
    assert [(e["pointer"], e["code"]) for e in errors] == [("#/attachments/0/filename", "line_break")]


async def test_send_field_sizes_are_bounded(client, admin):
    cases = {
        "#/reply_to": {"reply_to": [f"r{i}@example.com" for i in range(MAX_REPLY_TO + 1)]},
        "#/headers": {"headers": {f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)}},
    }
    for pointer, fields in cases.items():
        errors = await _refusal(client, admin, {**MESSAGE, **fields})
        assert errors[0]["pointer"] == pointer, errors
    too_big = {f"X-H{i}": "v" * 990 for i in range(20)}
    errors = await _refusal(client, admin, {**MESSAGE, "headers": too_big})
    assert [(e["pointer"], e["code"]) for e in errors] == [("#/headers", "headers_too_large")]
    html = "<p>" + "x" * MAX_TRACKED_HTML_CHARS + "</p>"
    errors = await _refusal(client, admin, {**MESSAGE, "html": html, "tracking": {"clicks": True}})
    assert [(e["pointer"], e["code"]) for e in errors] == [("#/html", "html_too_large_for_tracking")]


async def test_send_limits_are_in_the_openapi_document(client):
    document = await (await client.get("/v1/openapi.json")).json()
    text = str(document)
    assert f"'maxProperties': {MAX_HEADERS}" in text and f"'maxItems': {MAX_REPLY_TO}" in text
