"""Render an `OutboundMessage` as an RFC 5322 MIME message (for SMTP and SES raw sends).

Structure, outermost first, each level present only when needed:
  multipart/mixed           attachments
    multipart/related       inline parts with a content_id (only when there is html)
      multipart/alternative text + html

Addresses: display names are RFC 2047 encoded, internationalised domains travel as IDNA A-labels.
Bcc is never a header: those recipients exist only in the SMTP envelope. `Message-ID` is derived from
our message id and the sending domain, so the provider message id for SMTP is known before sending.

Why the tree is our own and not `email.message.EmailMessage`: with `email.policy.SMTP` the library parses
every header into a syntax tree on assignment and refolds it on output, and its generator walks the
tree generically; together they were nearly all of a 1.5 ms render. Each header is encoded once here
(ASCII, RFC 2047 words, folded at whitespace), bodies are encoded with binascii (quoted-printable /
base64), and `_Part.write` emits the bytes the stdlib generator would for the same tree (CRLF line
endings; tests parse the output back with the stdlib parser).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import encode_rfc2231, format_datetime, formataddr, quote
from typing import TYPE_CHECKING

from schemas.domain_names import to_ascii_domain
from schemas.messages import Address, Attachment, OutboundMessage

if TYPE_CHECKING:
    from providers.dkim import DkimSigner

MESSAGE_ID_HEADER = "X-Mailers-Message-Id"
LINE_LIMIT = 78  # RFC 5322 2.1.1 "SHOULD"; bodies may go to the 998 "MUST"
BODY_LINE_LIMIT = 998
_ENCODED_WORD_BYTES = 45  # 45 bytes -> 60 base64 chars; with "=?utf-8?b??=" a word stays <= 75

# Headers the renderer owns; a custom header may not replace them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Content-ID",
        "DKIM-Signature",
        MESSAGE_ID_HEADER,
        "Return-Path",
        "Received",
        "Sender",
    )
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_MIME_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NEWLINES = re.compile(r"\r\n|\r|\n")
CRLF = "\r\n"


class MimeError(ValueError):
    """The message cannot be rendered as it is (bad header, undecodable address)."""


class _Part:
    """One MIME entity: its headers (already in wire form) and a text payload or the parts it holds."""

    __slots__ = ("headers", "payload", "boundary")

    def __init__(
        self, headers: list[tuple[str, str]], payload: str | list[_Part], boundary: str | None = None
    ):
        self.headers, self.payload, self.boundary = headers, payload, boundary

    def write(self, out: list[str]) -> None:
        for name, value in self.headers:
            out.append(f"{name}: {fold_at_spaces(value, len(name) + 2, CRLF)}{CRLF}")
        out.append(CRLF)
        if isinstance(self.payload, str):
            out.append(_NEWLINES.sub(CRLF, self.payload))
            return
        for index, part in enumerate(self.payload):
            out.append(f"{CRLF if index else ''}--{self.boundary}{CRLF}")
            part.write(out)
        out.append(f"{CRLF}--{self.boundary}--{CRLF}")


def fold_at_spaces(value: str, first_line_used: int, linesep: str) -> str:
    """Fold before a space where a line would pass 78 characters (unfolding restores the value)."""
    if first_line_used + len(value) <= LINE_LIMIT:
        return value
    words = value.split(" ")
    lines, line, used = [], words[0], first_line_used + len(words[0])
    for word in words[1:]:
        if used + 1 + len(word) > LINE_LIMIT and line.strip():
            lines.append(line)
            line, used = word, 1 + len(word)
        else:
            line, used = f"{line} {word}", used + 1 + len(word)
    lines.append(line)
    return f"{linesep} ".join(lines)


def encoded_words(text: str) -> str:
    """RFC 2047 form of free text: unchanged when ASCII, else utf-8 B-encoded words of <= 75 chars."""
    if text.isascii():
        return text
    words, chunk = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _ENCODED_WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words)


def ascii_domain(domain: str) -> str:
    """The IDNA A-label form of a domain (`bücher.example` -> `xn--bcher-kva.example`)."""
    try:
        return to_ascii_domain(domain)
    except ValueError as exc:
        raise MimeError(f"invalid domain {domain!r}: {exc}") from None


def ascii_email(email: str) -> str:
    local, _, domain = _checked_value("address", email).rpartition("@")
    if not local or not local.isascii():
        raise MimeError(f"address needs an ASCII local part (SMTPUTF8 is not supported): {email!r}")
    return f"{local}@{ascii_domain(domain)}"


def format_address(address: Address) -> str:
    return _formatted_address(address.email, address.name)


@functools.lru_cache(maxsize=4096)
def _formatted_address(email_text: str, name: str | None) -> str:
    # Cached: a campaign's or a bulk send's messages share their From (and a dispatcher sees each
    # recipient's address again on retries); email.utils.formataddr was a tenth of a render.
    email = ascii_email(email_text)
    if not name:
        return email
    _checked_value("display name", name)
    if name.isascii():
        return formataddr((name, email))
    return f"{encoded_words(name)} <{email}>"


def message_id_header(message: OutboundMessage) -> str:
    return f"<{message.id}@{ascii_domain(message.sending_domain)}>"


def render_mime(
    message: OutboundMessage,
    *,
    extra_headers: Mapping[str, str] = {},
    dkim: DkimSigner | None = None,
    now: datetime | None = None,
) -> bytes:
    """The wire bytes (CRLF), DKIM-signed when a signer is given. `extra_headers` (e.g.
    List-Unsubscribe) win over the message's own custom headers; neither may replace a header the
    renderer owns."""
    content = _body_tree(message)
    headers = [
        *_envelope_headers(message, now or datetime.now(UTC)),
        *_custom_headers({**message.headers, **extra_headers}),
        ("MIME-Version", "1.0"),
        *content.headers,
    ]
    out: list[str] = []
    _Part(headers, content.payload, content.boundary).write(out)
    raw = "".join(out).encode("ascii")
    return dkim.sign(raw) if dkim is not None else raw


def _envelope_headers(message: OutboundMessage, now: datetime) -> Iterable[tuple[str, str]]:
    yield "From", format_address(message.from_)
    for name, addresses in (("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if addresses:
            yield name, ", ".join(map(format_address, addresses))
    yield "Subject", encoded_words(_checked_value("Subject", message.subject))
    yield "Date", _date_header(now.replace(microsecond=0))
    yield "Message-ID", message_id_header(message)
    yield MESSAGE_ID_HEADER, message.id


@functools.lru_cache(maxsize=8)
def _date_header(second: datetime) -> str:
    """RFC 5322 date of a whole second (format_datetime ignores the fraction): the messages rendered in
    the same second share it; formatting it was a fifth of a render."""
    return format_datetime(second)


def _custom_headers(headers: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise MimeError(f"invalid header name {name!r}")
        if name.lower() in RESERVED_HEADERS:
            raise MimeError(f"header {name!r} is set by the renderer and cannot be overridden")
        yield name, encoded_words(_checked_value(name, value))


def _checked_value(name: str, value: str) -> str:
    if _CONTROL.search(value):
        raise MimeError(f"header {name!r} contains a line break or control character")
    return value


def _body_tree(message: OutboundMessage) -> _Part:
    text, html = message.text, message.html
    if text is None and html is None:
        text = ""
    content = _text_part("html", html) if html is not None else None
    inline = [a for a in message.attachments if a.content_id and content is not None]
    attached = [a for a in message.attachments if not (a.content_id and content is not None)]
    if content is not None and inline:
        content = _multipart("related", [content, *(_binary_part(a, "inline") for a in inline)])
    if text is not None:
        plain = _text_part("plain", text)
        content = _multipart("alternative", [plain, content]) if content is not None else plain
    assert content is not None
    if attached:
        content = _multipart("mixed", [content, *(_binary_part(a, "attachment") for a in attached)])
    return content


def _multipart(subtype: str, parts: list[_Part]) -> _Part:
    # Random boundary: a 96-bit token never occurs by chance in base64, quoted-printable or prose.
    boundary = f"=_{secrets.token_hex(12)}"
    return _Part([("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')], parts, boundary)


def _text_part(subtype: str, body: str) -> _Part:
    body = body.replace("\r\n", "\n")
    if body.isascii() and all(len(line) <= BODY_LINE_LIMIT for line in body.split("\n")):
        cte, payload = "7bit", body
    else:
        # Choosing quoted-printable ourselves spares the library encoding the body twice to compare.
        cte, payload = "quoted-printable", binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii")
    headers = [("Content-Type", f'text/{subtype}; charset="utf-8"'), ("Content-Transfer-Encoding", cte)]
    return _Part(headers, payload)


def _binary_part(attachment: Attachment, disposition: str) -> _Part:
    maintype, _, subtype = attachment.content_type.partition("/")
    if not (_MIME_TOKEN.match(maintype) and _MIME_TOKEN.match(subtype)):
        raise MimeError(f"invalid content type {attachment.content_type!r}")
    _checked_value("filename", attachment.filename)
    headers = [
        ("Content-Type", f"{maintype}/{subtype}"),
        ("Content-Transfer-Encoding", "base64"),
        ("Content-Disposition", f"{disposition}; {_filename_parameter(attachment.filename)}"),
    ]
    if attachment.content_id:
        headers.append(("Content-ID", f"<{_checked_value('content_id', attachment.content_id).strip('<>')}>"))
    return _Part(headers, base64.encodebytes(attachment.content).decode("ascii"))


def _filename_parameter(filename: str) -> str:
    if filename.isascii():
        return f'filename="{quote(filename)}"'
    return f"filename*={encode_rfc2231(filename, 'utf-8')}"
