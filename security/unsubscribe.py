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


def list_unsubscribe_headers(https_url: str, mailto: str | None, *, checked: bool = False) -> dict[str, str]:
    """Both headers; `mailto` may be a bare address or a `mailto:` URI (with `?subject=` etc.).

    `checked`: the caller built both URIs from parts it already checked (an https base URL and a domain
    that are header-safe, a base64url token), so the per-URI checks are skipped (issue #13: this runs
    once per campaign recipient)."""
    if mailto and not mailto.lower().startswith("mailto:"):
        mailto = f"mailto:{mailto}"
    if not checked:
        if not https_url.lower().startswith("https://") or len(https_url) <= len("https://"):
            raise ValueError("one-click unsubscribe needs an https:// URL (RFC 8058)")
        for uri in (https_url, mailto):
            # A URI with brackets, commas, spaces or line breaks would break the header or inject another.
            if uri and HEADER_SAFE_URI.fullmatch(uri) is None:
                raise ValueError(f"not a header-safe URI: {uri!r}")
    value = f"<{https_url}>, <{mailto}>" if mailto else f"<{https_url}>"
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": ONE_CLICK}
