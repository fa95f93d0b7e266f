"""A decoded `SendRequest` → the normalised `OutboundMessage` plus what routing and scheduling need.

Every rule of API.md's "Sending" section lives here; each failure names the offending field with a
JSON pointer under `prefix` (`#` for /v1/send, `#/messages/3` for a bulk item).
"""

from __future__ import annotations

import binascii
from datetime import UTC, datetime, timedelta

import msgspec
import pybase64

from schemas.addresses import AddressError, parse_address, parse_address_list
from schemas.messages import Address, Attachment, OutboundMessage
from schemas.problems import ApiError, FieldError
from schemas.send import SendRequest

MAX_RECIPIENTS = 50
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# The rest of the header block (our own headers, DKIM) must still fit a provider's limits (SES: 256 kB
# for the whole message header is generous; most relays refuse far less).
MAX_HEADER_BYTES = 16 * 1024
# Gmail clips bodies past 102 kB; the link rewrite costs at most ~1 µs per character on crafted input.
MAX_TRACKED_HTML_CHARS = 256 * 1024
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "dkim-signature",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "return-path",
        "received",
        "sender",
        "x-mailers-message-id",
    }
)


class PreparedSend(msgspec.Struct, kw_only=True):
    message: OutboundMessage
    send_at: datetime | None
    purpose: str | None
    forced_server: str | None
    track_opens: bool
    track_clicks: bool
    unsubscribe: bool
    item_key: str | None
    derived_id: bool = False  # the message id was derived from its inputs (actors/outbound/service.py)
    ranged: bool = False  # and is a packed campaign's position id (store/ledger/index_ranges.py)
    # The API key an implicit item key (from the Idempotency-Key header) belongs to; None: the body's own
    # `idempotency_key`, per workspace (store/keyspace.send_item).
    item_key_owner: str | None = None


class _Errors:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[FieldError] = []

    def add(self, pointer: str, detail: str, code: str = "invalid") -> None:
        self.items.append(FieldError(pointer=self.prefix + pointer, detail=detail, code=code))


def prepare_send(
    request: SendRequest, *, workspace: str, message_id: str, now: datetime, prefix: str = "#"
) -> PreparedSend:
    errors = _Errors(prefix)
    sender = _one_address(request.from_, "/from", errors)
    to = _addresses(request.to, "/to", errors)
    cc = _addresses(request.cc, "/cc", errors)
    bcc = _addresses(request.bcc, "/bcc", errors)
    reply_to = _addresses(request.reply_to, "/reply_to", errors) if request.reply_to is not None else []
    _check_own_fields(request, to, cc, bcc, errors)
    headers = _headers(request.headers, errors)
    attachments = _attachments(request, errors)
    send_at = _send_at(request.send_at, now, errors)
    if errors.items:
        raise ApiError("validation_error", "The message is invalid", errors=errors.items)
    assert sender is not None, "an unparsable sender is one of the errors above"
    message = OutboundMessage(
        id=message_id,
        workspace=workspace,
        from_=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=request.subject,
        html=request.html,
        text=request.text,
        headers=headers,
        attachments=attachments,
        tags=list(dict.fromkeys(request.tags)),
        metadata=request.metadata,
    )
    return PreparedSend(
        message=message,
        send_at=send_at,
        purpose=request.routing.purpose,
        forced_server=request.routing.server,
        track_opens=request.tracking.opens,
        track_clicks=request.tracking.clicks,
        unsubscribe=request.unsubscribe,
        item_key=request.idempotency_key,
    )


class SharedSend:
    """`prepare_send` for many requests that differ only in their per-recipient fields (`to`, subject,
    html, text, metadata, idempotency key): a campaign chunk, every message from the same sender with
    the same options. What they share (sender, reply-to, cc/bcc, headers, tags, routing, tracking,
    send_at) is parsed and checked once, by `prepare_send` on the first request; each request then only
    gets the checks of what is its own. The result and the errors are exactly `prepare_send`'s
    (tests/campaigns/test_fanout.py compares them); a request whose shared part differs from
    the last one's, or that has headers or attachments, goes through `prepare_send` whole.
    """

    def __init__(self, *, workspace: str, now: datetime) -> None:
        self.workspace = workspace
        self.now = now
        self._shape: tuple | None = None
        self._base: PreparedSend | None = None

    def prepare(self, request: SendRequest, *, message_id: str, prefix: str) -> PreparedSend:
        shape = _shape(request)
        if shape is None or shape != self._shape or self._base is None:
            prepared = prepare_send(
                request, workspace=self.workspace, message_id=message_id, now=self.now, prefix=prefix
            )
            if shape is not None:
                self._shape, self._base = shape, prepared
            return prepared
        base = self._base
        errors = _Errors(prefix)
        to = _addresses(request.to, "/to", errors)
        _check_own_fields(request, to, base.message.cc, base.message.bcc, errors)
        if errors.items:
            raise ApiError("validation_error", "The message is invalid", errors=errors.items)
        message = msgspec.structs.replace(
            base.message,
            id=message_id,
            to=to,
            subject=request.subject,
            html=request.html,
            text=request.text,
            metadata=request.metadata,
        )
        return msgspec.structs.replace(base, message=message, item_key=request.idempotency_key)


def _shape(request: SendRequest) -> tuple | None:
    """What a request shares with others of its batch; None: nothing to share (headers, attachments
    and a send_at are checked per request)."""
    if request.headers or request.attachments or request.send_at is not None:
        return None
    reply_to = request.reply_to if not isinstance(request.reply_to, list) else tuple(request.reply_to)
    return (
        request.from_,
        reply_to,
        tuple(request.cc),
        tuple(request.bcc),
        tuple(request.tags),
        request.routing.purpose,
        request.routing.server,
        request.tracking.opens,
        request.tracking.clicks,
        request.unsubscribe,
    )


def _one_address(text: str, pointer: str, errors: _Errors) -> Address | None:
    try:
        return parse_address(text)
    except AddressError as exc:
        errors.add(pointer, exc.detail, exc.code)
        return None


def _addresses(value: str | list[str], pointer: str, errors: _Errors) -> list[Address]:
    try:
        return parse_address_list(value)
    except AddressError as exc:
        errors.add(pointer + ("" if exc.index is None else f"/{exc.index}"), exc.detail, exc.code)
        return []


def _check_own_fields(
    request: SendRequest, to: list[Address], cc: list[Address], bcc: list[Address], errors: _Errors
) -> None:
    """What each message checks of its own, whether whole (`prepare_send`) or after `SharedSend`."""
    _check_recipients(to, cc, bcc, errors)
    if request.unsubscribe and len(to) + len(cc) + len(bcc) > 1:
        # The one-click link names one recipient; with several, one person would unsubscribe another.
        errors.add(
            "/unsubscribe",
            "one-click unsubscribe needs exactly one recipient",
            "unsubscribe_needs_one_recipient",
        )
    _check_content(request, errors)
    _check_single_lines(request, errors)


def _check_recipients(to: list[Address], cc: list[Address], bcc: list[Address], errors: _Errors) -> None:
    total = len(to) + len(cc) + len(bcc)
    if not to and not any(e.pointer.startswith(errors.prefix + "/to") for e in errors.items):
        errors.add("/to", "at least one recipient is required", "missing_recipient")
    if total > MAX_RECIPIENTS:
        errors.add(
            "/to", f"{total} recipients over to, cc and bcc; at most {MAX_RECIPIENTS}", "too_many_recipients"
        )


def _check_content(request: SendRequest, errors: _Errors) -> None:
    given = [name for name in ("html", "text", "template") if getattr(request, name) is not None]
    if not given:
        errors.add("/html", "one of html, text or template is required", "missing_content")
    elif request.template is not None:
        if len(given) > 1:
            errors.add("/template", "give either a template or html/text, not both", "conflicting_content")
        else:
            errors.add(
                "/template/id", f"no template {request.template.id!r} in this workspace", "template_not_found"
            )


def _check_single_lines(request: SendRequest, errors: _Errors) -> None:
    """Fields that become header lines: a CR or LF would end the header and start another."""
    if _has_line_break(request.subject):
        errors.add("/subject", "the subject may not contain line breaks (CR or LF)", "line_break")
    for index, item in enumerate(request.attachments):
        for name in ("filename", "content_id"):
            if _has_line_break(getattr(item, name) or ""):
                errors.add(
                    f"/attachments/{index}/{name}", f"the {name} may not contain line breaks", "line_break"
                )
    if request.html is not None and request.tracking.clicks and len(request.html) > MAX_TRACKED_HTML_CHARS:
        errors.add(
            "/html",
            f"{len(request.html)} characters of HTML; click tracking takes at most {MAX_TRACKED_HTML_CHARS}",
            "html_too_large_for_tracking",
        )


def _has_line_break(text: str) -> bool:
    return "\r" in text or "\n" in text


def _headers(headers: dict[str, str], errors: _Errors) -> dict[str, str]:
    size = sum(len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items())
    if size > MAX_HEADER_BYTES:
        errors.add("/headers", f"{size} bytes of headers; at most {MAX_HEADER_BYTES}", "headers_too_large")
        return {}
    clean = {}
    for name, value in headers.items():
        pointer = f"/headers/{name.replace('~', '~0').replace('/', '~1')}"
        if not name or any(c in name for c in ":\r\n ") or not name.isascii() or not name.isprintable():
            errors.add(pointer, "not a valid header name", "invalid_header")
        elif name.lower() in RESERVED_HEADERS:
            errors.add(pointer, f"{name} is set by Mailers and cannot be overridden", "reserved_header")
        elif "\r" in value or "\n" in value or len(value) > 998:
            errors.add(
                pointer,
                "header values may not contain line breaks or exceed 998 characters",
                "invalid_header",
            )
        else:
            clean[name] = value
    return clean


def _attachments(request: SendRequest, errors: _Errors) -> list[Attachment]:
    decoded, total = [], 0
    for index, item in enumerate(request.attachments):
        try:
            # The stdlib decoder holds the GIL ~40 ms for 9 MB (issue #11); pybase64 decodes it in ~2 ms.
            content = pybase64.b64decode(item.content, validate=True)
        except (binascii.Error, ValueError):
            errors.add(f"/attachments/{index}/content", "not valid base64", "invalid_base64")
            continue
        total += len(content)
        decoded.append(
            Attachment(
                filename=item.filename,
                content=content,
                content_type=item.content_type,
                content_id=item.content_id,
            )
        )
    if total > MAX_ATTACHMENT_BYTES:
        errors.add(
            "/attachments", f"{total} bytes decoded; at most {MAX_ATTACHMENT_BYTES}", "attachments_too_large"
        )
    return decoded


def _send_at(send_at: datetime | None, now: datetime, errors: _Errors) -> datetime | None:
    if send_at is None:
        return None
    if send_at.tzinfo is None:
        errors.add("/send_at", "give a time zone (RFC 3339, e.g. 2026-12-01T09:00:00Z)", "invalid_time")
        return None
    send_at = send_at.astimezone(UTC)
    if send_at - now > MAX_SCHEDULE_AHEAD:
        errors.add("/send_at", "at most 30 days ahead", "too_far_ahead")
        return None
    return send_at if send_at > now else None
