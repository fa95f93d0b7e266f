"""The worst request bodies we can construct for /v1/send and /v1/send/bulk (issue #11).

Shared by the proof test and the bench's `attack` phase. Every body is valid and accepted (scheduled a
month ahead, so no dispatcher spends CPU on it): the ingress does all of its work. The attacker sends
each with an Idempotency-Key of its own, so the ingress also fingerprints every body.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import msgspec

from actors.outbound.validation import MAX_TRACKED_HTML_CHARS
from schemas.send import MAX_HEADERS, MAX_REPLY_TO
from security.link_rewrite import MAX_LINK_TAGS, MAX_TRACKED_LINKS

MAX_ATTACHMENTS = 100  # schemas/send.py: SendRequest.attachments
BULK_HTML_CHARS = 8_400


def _base(i: int) -> dict:
    return {
        "from": "Acme <hello@acme.com>",
        "to": f"victim{i}@example.com",
        "subject": "x" * 998,
        "text": "x",
        "tracking": {"opens": True, "clicks": True},
        "send_at": (datetime.now(UTC) + timedelta(days=29)).isoformat(),
    }


def crafted_html(chars: int) -> str:
    """Links cost the scanner and the rewrite the most per character (each reaches Python-level code):
    as many as a message may hold (MAX_LINK_TAGS, over MAX_TRACKED_LINKS distinct URLs), then bare anchors.
    """
    links = "".join(f'<a href="https://x.example/{i % MAX_TRACKED_LINKS}">' for i in range(MAX_LINK_TAGS))
    return (links[:chars] + "<a>" * (chars // 3))[:chars]


def worst_bodies() -> list[tuple[str, bytes]]:
    """Each cost we know of, at its largest: links to track (one message at the tracking cap with the most
    reply-to addresses and headers; a bulk of 1,000 messages filling the body cap with links), the largest
    content (9 MB of text; one 7 MiB attachment; 100 attachments, the most a message may carry), a
    200-deep unknown field (refused 422), and the bodies whose cost is msgspec's JSON decode itself,
    one C call holding the GIL: 9 MB of JSON escapes, 9 MB of JSON tokens (nested empty lists in template
    variables, refused only once parsed). Every body over 256 KiB is decoded, fingerprinted, tracked and
    enqueued in the ingress's worker process (ingress/worker_process.py)."""
    single = {
        **_base(0),
        "html": crafted_html(MAX_TRACKED_HTML_CHARS),
        "reply_to": [f"r{j}@example.com" for j in range(MAX_REPLY_TO)],
        "headers": {f"X-H{j}": "v" * 300 for j in range(MAX_HEADERS)},
    }
    # 1,000 messages of 8.4 KB of links each (and a 998-character subject): 10.1 MB, under the 10 MiB cap.
    bulk = {"messages": [{**_base(i), "html": crafted_html(BULK_HTML_CHARS)} for i in range(1000)]}
    nested: dict = {"v": 1}
    for _ in range(200):
        nested = {"v": nested}
    deep = {**_base(1), "html": "<p>x</p>", "metadata": {"k": "v" * 500}}
    huge = {**_base(2), "html": "<p>x</p>", "text": "y" * (9 * 1024 * 1024)}
    # Base64 of 7 MiB (9.3 MB), under the 10 MiB body cap: the decoder is the cost.
    attachment = {"filename": "a.bin", "content": base64.b64encode(os.urandom(7 * 1024 * 1024)).decode()}
    attached = {**_base(3), "html": "<p>x</p>", "attachments": [attachment]}
    piece = base64.b64encode(os.urandom(70 * 1024)).decode()
    many = [{"filename": f"a{j}.bin", "content": piece} for j in range(MAX_ATTACHMENTS)]
    attached_many = {**_base(6), "html": "<p>x</p>", "attachments": many}
    # The slowest string to decode per byte: 4.5 Mi line breaks, each `\n` in the JSON.
    escaped = {**_base(4), "html": "<p>x</p>", "text": "\n" * (9 * 1024 * 1024 // 2)}
    tokens = {**_base(5), "template": {"id": "tpl_x", "variables": {"a": [[]] * (3 * 1024 * 1024)}}}
    return [
        ("/v1/send", msgspec.json.encode(single)),
        ("/v1/send/bulk", msgspec.json.encode(bulk)),
        ("/v1/send", msgspec.json.encode({**deep, "unknown": nested})),
        ("/v1/send", msgspec.json.encode(huge)),
        ("/v1/send", msgspec.json.encode(attached)),
        ("/v1/send", msgspec.json.encode(attached_many)),
        ("/v1/send", msgspec.json.encode(escaped)),
        ("/v1/send", msgspec.json.encode(tokens)),
    ]
