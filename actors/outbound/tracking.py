"""Tracking and one-click unsubscribe, applied to a message once, just before it is stored.

`Tracking.prepare` is pure and synchronous (no I/O): the send path calls it for every message, so it
must stay cheap (≈ 0.075 ms for a 2 kB body with 10 links, see docs/tracking.md).
- clicks: every http(s) link of the HTML body points at `/t/c/{token}/{index}`; the original URLs come
  back in link-index order and are stored with the message (`MessageMeta.links`), so a redirect can only
  lead to a URL that was in the message;
- opens: a 1×1 pixel `/t/o/{token}` before `</body>` (or at the end of a body without one);
- the token of both is one recipient token (`security/tracking.OpenToken`), sealed once per message
  whatever its number of links;
- unsubscribe: `List-Unsubscribe` (HTTPS + mailto) and `List-Unsubscribe-Post` (RFC 8058) headers.
The text part is never touched. Tokens name one recipient: the first `to` address (the one events
are reported under); a message with several recipients shares one body, so they share its tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import msgspec

from schemas.domain_names import to_ascii_domain
from schemas.messages import OutboundMessage
from schemas.settings import Settings
from security.link_rewrite import open_pixel, rewrite_html
from security.secretbox import derive_key
from security.tracking import OpenToken, TrackingPayload, TrackingTokens, UnsubscribeToken
from security.unsubscribe import HEADER_SAFE_URI, list_unsubscribe_headers

KEY_PURPOSE = "tracking"
_UNSAFE_IN_BASE_URL = frozenset('<>, \t\r\n"')


class Tracking:
    def __init__(self, tokens: TrackingTokens, base_url: str) -> None:
        base = base_url.rstrip("/")
        if any(ch in _UNSAFE_IN_BASE_URL or not ch.isascii() for ch in base):
            raise ValueError(f"the public URL {base_url!r} cannot go into a header")
        self.tokens = tokens
        self.base_url = base
        # RFC 8058 one-click needs an HTTPS URI; an http-only (development) install offers the link only.
        self.one_click = base.lower().startswith("https://")
        self.header_safe_base = _header_safe(base + "/t/u/")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracking:
        if settings.secret_key is None:
            raise ValueError("tracking needs MAILERS_SECRET_KEY")
        old = [derive_key(key, KEY_PURPOSE) for key in settings.secret_keys_old]
        return cls(TrackingTokens(derive_key(settings.secret_key, KEY_PURPOSE), old), settings.base_url)

    def read(self, kind: str, token: str) -> TrackingPayload | None:
        return self.tokens.read(kind, token)

    def prepare(
        self,
        message: OutboundMessage,
        *,
        track_opens: bool,
        track_clicks: bool,
        unsubscribe: bool,
        list_id: str | None = None,
    ) -> tuple[OutboundMessage, list[str]]:
        """The message to store and send, and its tracked links in index order (for `MessageMeta.links`).

        A message left without recipients (all suppressed) is never sent, so it is returned as it is.
        """
        if not message.recipients:
            return message, []
        recipient = token_recipient(message)
        html = message.html
        links: list[str] = []
        if html is not None and track_clicks:
            token = self._recipient_token(message, recipient)
            html, links = rewrite_html(
                html,
                base_url=self.base_url,
                click_path=lambda index: f"{token()}/{index}",
                open_token=token() if track_opens else None,
            )
        elif html is not None and track_opens:
            opened = self._recipient_token(message, recipient)()
            html = _before_body_end(html, open_pixel(self.base_url, opened))
        headers = message.headers
        if unsubscribe:
            headers = {**headers, **self.unsubscribe_headers(message, recipient, list_id)}
        if html is message.html and headers is message.headers:
            return message, links
        return msgspec.structs.replace(message, html=html, headers=headers), links

    def unsubscribe_headers(
        self, message: OutboundMessage, recipient: str, list_id: str | None
    ) -> dict[str, str]:
        token = self.tokens.issue(
            UnsubscribeToken(
                workspace=message.workspace,
                message_id=message.id,
                recipient=recipient,
                list_id=list_id,
                scope="list" if list_id else "workspace",
            )
        )
        url = f"{self.base_url}/t/u/{token}"
        domain = _ascii_domain(message.from_.domain)
        mailto = f"mailto:unsubscribe+{token}@{domain}" if domain else None
        if self.one_click:
            # The base URL was checked header-safe once, the domain is checked here, a token is base64url.
            checked = self.header_safe_base and (domain is None or _header_safe(domain))
            return list_unsubscribe_headers(url, mailto, checked=checked)
        return {"List-Unsubscribe": ", ".join(f"<{uri}>" for uri in (url, mailto) if uri)}

    def _recipient_token(self, message: OutboundMessage, recipient: str) -> Callable[[], str]:
        """The message's recipient token (the pixel's and every link's), sealed at the first call only:
        a body with no link and no pixel costs none."""
        issued: list[str] = []

        def token() -> str:
            if not issued:
                issued.append(
                    self.tokens.issue(
                        OpenToken(workspace=message.workspace, message_id=message.id, recipient=recipient)
                    )
                )
            return issued[0]

        return token


@functools.lru_cache(maxsize=4)
def tracking_for(settings: Settings) -> Tracking:
    """One `Tracking` per settings (key derivation and cipher set-up happen once per process)."""
    return Tracking.from_settings(settings)


def token_recipient(message: OutboundMessage) -> str:
    first = message.to[0] if message.to else message.recipients[0]
    return first.email


def _before_body_end(html: str, snippet: str) -> str:
    # Only the pixel goes in, so a search for the last `</body` is enough (link_rewrite parses the
    # document when it rewrites links anyway); a body without one gets the pixel at the end.
    at = html.lower().rfind("</body")
    at = len(html) if at < 0 else at
    return html[:at] + snippet + html[at:]


@functools.lru_cache(
    maxsize=256
)  # a campaign's every message is from one domain: one IDNA pass, not one each
def _ascii_domain(domain: str) -> str | None:
    try:
        return to_ascii_domain(domain)
    except ValueError:
        return None


@functools.lru_cache(maxsize=256)
def _header_safe(text: str) -> bool:
    return HEADER_SAFE_URI.fullmatch(text) is not None
