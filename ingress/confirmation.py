"""Double opt-in: the confirmation mail, sent through the normal send path.

New members of a `double` list are `unconfirmed`; each gets one mail from the list's
`confirmation_from` with a signed link (`security/confirm_tokens.py`) to `/c/{token}`. The mail is an
ordinary message: validated, routed, enqueued and dispatched like `/v1/send` (so routing, quotas and
suppressions apply), with a per-item idempotency key per (list, subscriber, request time), so a retried
bulk request does not mail anyone twice. A list may name a `confirmation_template`; rendering it is the
templates module's (`confirmation_content` is the hook), the built-in text and HTML are used until then.
"""

from __future__ import annotations

import functools
import html
import logging
from datetime import UTC, datetime

from ingress.context import Principal
from ingress.problems import ApiError
from ingress.send_service import Accepted, accept, prepare_items
from schemas.audience import ListRecord
from schemas.send import SendRequest
from schemas.settings import Settings
from security.confirm_tokens import ConfirmToken, ConfirmTokens
from security.secretbox import derive_key

log = logging.getLogger("mailers.audience.confirmation")
ITEM_SCOPE = "confirm"


@functools.lru_cache(maxsize=8)
def confirm_tokens(settings: Settings) -> ConfirmTokens:
    if settings.secret_key is None:
        raise ApiError("unavailable", "Confirmation links cannot be signed: MAILERS_SECRET_KEY is not set")
    return ConfirmTokens(derive_key(settings.secret_key, "confirm-links"))


def confirm_url(settings: Settings, token: ConfirmToken) -> str:
    return f"{settings.base_url.rstrip('/')}/c/{confirm_tokens(settings).issue(token)}"


def confirmation_content(target: ListRecord, url: str) -> tuple[str, str, str]:
    """(subject, html, text) of the confirmation mail. The hook for `target.confirmation_template`."""
    subject = f"Please confirm your subscription to {target.name}"
    text = (
        f"Please confirm that you want to receive {target.name}:\n\n{url}\n\nIf you did not ask, ignore this."
    )
    body = (
        f"<p>Please confirm that you want to receive <b>{html.escape(target.name)}</b>.</p>"
        f'<p><a href="{html.escape(url)}">Confirm my subscription</a></p>'
        "<p>If you did not ask, ignore this mail.</p>"
    )
    return subject, body, text


def confirmation_request(settings: Settings, target: ListRecord, subscriber_id: str, email: str, now_ms: int):
    token = ConfirmToken(target.workspace, target.id, subscriber_id, now_ms)
    subject, body, text = confirmation_content(target, confirm_url(settings, token))
    return SendRequest(
        from_=target.confirmation_from or "",
        to=email,
        subject=subject,
        html=body,
        text=text,
        tags=["confirmation"],
        metadata={"list_id": target.id, "subscriber_id": subscriber_id},
        idempotency_key=f"{target.id}:{subscriber_id}:{now_ms}",
    )


async def send_confirmations(
    services, principal: Principal, target: ListRecord, members: list[tuple[str, str]], now_ms: int
) -> int:
    """Enqueue one confirmation per (subscriber id, email); returns how many were accepted."""
    if not members or not target.confirmation_from:
        return 0
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    requests = [confirmation_request(services.settings, target, sid, email, now_ms) for sid, email in members]
    prefixes = [f"#/confirmations/{i}" for i in range(len(requests))]
    prepared = prepare_items(requests, principal, now=now, prefixes=prefixes)
    valid = [(p, prefix) for p, prefix in zip(prepared, prefixes, strict=True) if not isinstance(p, ApiError)]
    for problem in (p for p in prepared if isinstance(p, ApiError)):
        log.warning("confirmation mail refused for list %s: %s", target.id, problem)
    if not valid:
        return 0
    outcomes = await accept(
        services,
        principal,
        [p for p, _ in valid],
        item_scope=ITEM_SCOPE,
        prefixes=[prefix for _, prefix in valid],
        now=now,
    )
    return sum(isinstance(o, Accepted) for o in outcomes)
