"""The worst request bodies we can construct for /v1/send and /v1/send/bulk (issue #11).

Shared by the proof test and the bench's `attack` phase. Every body is valid and accepted (scheduled a
month ahead, so no dispatcher spends CPU on it): the ingress does all of its work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from actors.outbound.validation import MAX_TRACKED_HTML_CHARS
from schemas.send import MAX_HEADERS, MAX_REPLY_TO
from security.link_rewrite import MAX_LINK_TAGS, MAX_TRACKED_LINKS


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
    single = {
        **_base(0),
        "html": crafted_html(MAX_TRACKED_HTML_CHARS),
        "reply_to": [f"r{j}@example.com" for j in range(MAX_REPLY_TO)],
        "headers": {f"X-H{j}": "v" * 300 for j in range(MAX_HEADERS)},
    }
    bulk = {"messages": [{**_base(i), "html": crafted_html(2_000)} for i in range(1000)]}
    nested: dict = {"v": 1}
    for _ in range(200):
        nested = {"v": nested}
    deep = {**_base(1), "html": "<p>x</p>", "metadata": {"k": "v" * 500}}
    huge = {**_base(2), "html": "<p>x</p>", "text": "y" * (9 * 1024 * 1024)}
    return [
        ("/v1/send", msgspec.json.encode(single)),
        ("/v1/send/bulk", msgspec.json.encode(bulk)),
        ("/v1/send", msgspec.json.encode({**deep, "unknown": nested})),
        ("/v1/send", msgspec.json.encode(huge)),
    ]
