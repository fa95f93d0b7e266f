"""What of a provider's own error text may travel into a message's events (and so back to the tenant).

A tenant chooses where its server connects, so an error body can be anything the target answered: an
intranet page, a metadata document, a secret. Only two things are kept: text taken from the
provider's documented JSON error shape (a code, a message), and for anything else a description of
the body (its content type and size), never its bytes. Every kept text is cleaned of control and
format characters and cut to `MAX_REASON_CHARS`.
"""

from __future__ import annotations

import unicodedata

MAX_REASON_CHARS = 200


def sanitised(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Printable text on one line, at most `limit` characters (an ellipsis marks a cut)."""
    kept = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text[: limit * 4]
    )
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1].rstrip() + "…"


def opaque_body(body: bytes, content_type: str | None) -> str:
    """The reason for a body that is not the provider's documented error shape: never its content."""
    kind = sanitised((content_type or "unknown type").split(";", 1)[0].strip(), 60) or "unknown type"
    return f"unrecognised error body ({kind}, {len(body)} bytes)" if body else "empty error body"
