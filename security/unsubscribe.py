"""RFC 2369 `List-Unsubscribe` and RFC 8058 one-click headers for marketing mail.

Gmail and Yahoo (2024) require both headers on bulk mail, with an HTTPS URI, and both covered by the
DKIM signature (the DKIM signer must list them in `h=`). The HTTPS URI is our `/t/u/{token}` endpoint,
which answers the one-click POST with 200 and never a redirect.
"""

from __future__ import annotations

import re

ONE_CLICK = "List-Unsubscribe=One-Click"
# Printable ASCII without space, `"`, `,`, `<` and `>`: one regex pass per URI (a per-character generator
# cost ~1 ms of a campaign's per-recipient budget for two URIs of ~160 characters).
HEADER_SAFE_URI = re.compile(r"[\x21\x23-\x2b\x2d-\x3b\x3d\x3f-\x7e]*")


def list_unsubscribe_headers(https_url: str, mailto: str | None) -> dict[str, str]:
    """Both headers; `mailto` may be a bare address or a `mailto:` URI (with `?subject=` etc.)."""
    if not https_url.lower().startswith("https://") or len(https_url) <= len("https://"):
        raise ValueError("one-click unsubscribe needs an https:// URL (RFC 8058)")
    uris = [_bracketed(https_url)]
    if mailto:
        uris.append(_bracketed(mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"))
    return {"List-Unsubscribe": ", ".join(uris), "List-Unsubscribe-Post": ONE_CLICK}


def _bracketed(uri: str) -> str:
    # A URI with brackets, commas, spaces or line breaks would break the header or inject another one.
    if HEADER_SAFE_URI.fullmatch(uri) is None:
        raise ValueError(f"not a header-safe URI: {uri!r}")
    return f"<{uri}>"
