"""MIME rendering: what a mail client parsing our bytes sees."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from providers.mime import MimeError, render_mime
from schemas.messages import Address, Attachment, OutboundMessage

NOW = datetime(2026, 4, 19, 10, 24, 11, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def message(**overrides: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "id": "msg_01JS0000000000000000000000",
        "workspace": "acme",
        "from_": Address("hello@acme.com", "Acme"),
        "to": [Address("ana@example.com", "Ana Müller")],
        "subject": "Welcome",
        "html": "<p>Hi Ana</p>",
        "text": "Hi Ana",
    }
    fields.update(overrides)
    return OutboundMessage(**fields)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def test_headers_and_line_endings() -> None:
    raw = render_mime(
        message(headers={"X-Entity-Ref-ID": "123"}, reply_to=[Address("help@acme.com")]), now=NOW
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")
    parsed = parse(raw)
    assert parsed["From"].addresses[0].display_name == "Acme"
    assert parsed["To"].addresses[0].display_name == "Ana Müller"
    assert parsed["To"].addresses[0].addr_spec == "ana@example.com"
    assert parsed["Reply-To"] == "help@acme.com"
    assert parsed["Message-ID"] == "<msg_01JS0000000000000000000000@acme.com>"
    assert parsed["X-Mailers-Message-Id"] == "msg_01JS0000000000000000000000"
    assert parsed["Date"].datetime == NOW
    assert parsed["X-Entity-Ref-ID"] == "123"
    assert parsed["MIME-Version"] == "1.0"


def test_html_and_text_are_alternatives_with_non_ascii_bodies() -> None:
    parsed = parse(
        render_mime(message(subject="Grüße, Ana ✉", text="Grüße\nline two", html="<p>Grüße ✉</p>"))
    )
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == "Grüße, Ana ✉"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Grüße\nline two"
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Grüße ✉</p>"


def test_single_body_is_not_multipart() -> None:
    parsed = parse(render_mime(message(html=None, text="only text")))
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content().strip() == "only text"


def test_attachments_and_inline_parts() -> None:
    attachments = [
        Attachment(filename="report é.pdf", content=b"%PDF-1.4 \x00\xff", content_type="application/pdf"),
        Attachment(filename="logo.png", content=PNG, content_type="image/png", content_id="logo@acme"),
    ]
    parsed = parse(render_mime(message(html='<img src="cid:logo@acme">', attachments=attachments)))
    assert parsed.get_content_type() == "multipart/mixed"
    body, attached = list(parsed.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    related = list(body.iter_parts())[1]
    assert related.get_content_type() == "multipart/related"
    html, logo = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert logo["Content-ID"] == "<logo@acme>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_content() == PNG
    assert attached.get_filename() == "report é.pdf"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_content() == b"%PDF-1.4 \x00\xff"


def test_bcc_never_appears_in_headers() -> None:
    raw = render_mime(message(bcc=[Address("secret@example.net")], cc=[Address("cc@example.org")]))
    assert b"secret@example.net" not in raw
    assert parse(raw)["Cc"] == "cc@example.org"
    assert parse(raw)["Bcc"] is None


def test_idn_domains_are_encoded() -> None:
    raw = render_mime(message(from_=Address("hi@bücher.de"), to=[Address("ana@münchen.example", "Ana")]))
    assert raw.isascii()
    parsed = parse(raw)
    assert parsed["To"].addresses[0].addr_spec == "ana@xn--mnchen-3ya.example"
    assert parsed["Message-ID"].endswith("@xn--bcher-kva.de>")


def test_long_headers_fold_below_78_and_round_trip() -> None:
    recipients = [Address(f"person{i}@example.com", f"Person Number {i}") for i in range(12)]
    subject = "A rather long subject line " * 6
    raw = render_mime(message(to=recipients, subject=subject.strip()))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    parsed = parse(raw)
    assert [a.addr_spec for a in parsed["To"].addresses] == [r.email for r in recipients]
    assert parsed["Subject"] == subject.strip()


def test_extra_headers_win_over_custom_headers() -> None:
    unsubscribe = "<https://mail.acme.com/t/u/tok>, <mailto:unsub@acme.com>"
    raw = render_mime(
        message(headers={"List-Unsubscribe": "<https://old>"}),
        extra_headers={
            "List-Unsubscribe": unsubscribe,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    parsed = parse(raw)
    assert parsed["List-Unsubscribe"] == unsubscribe
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    "overrides",
    [
        {"headers": {"Bcc": "x@example.com"}},
        {"headers": {"X-Evil": "a\r\nBcc: x@example.com"}},
        {"headers": {"Bad Name": "v"}},
        {"subject": "hi\nBcc: x@example.com"},
        {"to": [Address("ünï@example.com")]},
        {"to": [Address("ana@example.com", "Ana\r\nBcc: x@evil.com")]},
        {"cc": [Address("ana@example.com\r\nBcc: x@evil.com")]},
        {"attachments": [Attachment(filename="a", content=b"", content_type="text/plain\r\nX: y")]},
    ],
)
def test_unrenderable_messages_raise_mime_error(overrides: dict[str, object]) -> None:
    with pytest.raises(MimeError):
        render_mime(message(**overrides))
