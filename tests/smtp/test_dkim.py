"""DKIM keys, the DNS records to publish, and signatures checked by dkimpy's verifier."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.dkim import DkimKeyError, DkimSigner, DnsRecord, dns_records, generate_domain_key
from providers.mime import render_mime
from schemas.messages import Address, Attachment, OutboundMessage


@pytest.fixture(scope="module")
def domain_key() -> tuple[bytes, str]:
    return generate_domain_key()


def records(public_b64: str) -> list[DnsRecord]:
    return dns_records(
        "Acme.com",
        "mlr1",
        public_b64,
        return_path_host="bounces.mailers.example",
        spf_include="spf.mailers.example",
    )


def signed_message(private_pem: bytes) -> bytes:
    message = OutboundMessage(
        id="msg_01JS0000000000000000000000",
        workspace="acme",
        from_=Address("hello@acme.com", "Acme"),
        to=[Address("ana@example.com", "Ana Müller")],
        subject="Grüße",
        html="<p>Hi</p>",
        text="Hi\n",
        attachments=[Attachment(filename="a.bin", content=bytes(range(200)))],
    )
    unsubscribe = {
        "List-Unsubscribe": "<https://acme.com/t/u/x>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return render_mime(message, extra_headers=unsubscribe, dkim=DkimSigner("acme.com", "mlr1", private_pem))


def verify(message: bytes, public_b64: str) -> bool:
    dkim_record = next(r for r in records(public_b64) if r.purpose == "dkim")
    looked_up: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        looked_up.append(name)
        return dkim_record.value.encode() if name.rstrip(b".").decode() == dkim_record.name else b""

    ok = dkim.verify(message, dnsfunc=dnsfunc)
    assert looked_up == [b"mlr1._domainkey.acme.com."]
    return ok


def test_generated_key_is_rsa_2048_and_public_part_matches(domain_key: tuple[bytes, str]) -> None:
    private_pem, public_b64 = domain_key
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = serialization.load_der_public_key(base64.b64decode(public_b64))
    assert public.public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_dns_records(domain_key: tuple[bytes, str]) -> None:
    _, public_b64 = domain_key
    assert records(public_b64) == [
        DnsRecord("TXT", "mlr1._domainkey.acme.com", f"v=DKIM1; k=rsa; p={public_b64}", "dkim"),
        DnsRecord("TXT", "acme.com", "v=spf1 include:spf.mailers.example ~all", "spf"),
        DnsRecord("TXT", "_dmarc.acme.com", "v=DMARC1; p=none;", "dmarc"),
        DnsRecord("CNAME", "bounces.acme.com", "bounces.mailers.example", "return_path"),
    ]


def test_idn_domains_publish_and_sign_as_a_labels(domain_key: tuple[bytes, str]) -> None:
    names = [
        r.name
        for r in dns_records(
            "Bücher.de", "s1", domain_key[1], return_path_host="b.example", spf_include="s.example"
        )
    ]
    assert names == [
        "s1._domainkey.xn--bcher-kva.de",
        "xn--bcher-kva.de",
        "_dmarc.xn--bcher-kva.de",
        "bounces.xn--bcher-kva.de",
    ]
    assert DkimSigner("bücher.de", "s1", domain_key[0]).domain == "xn--bcher-kva.de"


def test_signature_verifies_against_the_published_record(domain_key: tuple[bytes, str]) -> None:
    private_pem, public_b64 = domain_key
    message = signed_message(private_pem)
    assert message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=acme.com;")
    tags = dkim.util.parse_tag_value(message.split(b"\r\nFrom:")[0].split(b":", 1)[1])
    assert tags[b"s"] == b"mlr1"
    assert {h.strip() for h in tags[b"h"].split(b":")} >= {
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    }
    assert max(len(line) for line in message.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 78
    assert verify(message, public_b64)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"Subject: =?utf-8?b?R3LDvMOfZQ==?=", b"Subject: =?utf-8?b?R3LDvMOfZA==?="),
        (b"From: Acme <hello@acme.com>", b"From: Acme <hello@evil.com>"),
        (b"List-Unsubscribe: <https://acme.com/t/u/x>", b"List-Unsubscribe: <https://evil.com/u>"),
        (b"<p>Hi</p>", b"<p>Ho</p>"),
    ],
)
def test_altered_message_fails(domain_key: tuple[bytes, str], before: bytes, after: bytes) -> None:
    private_pem, public_b64 = domain_key
    message = signed_message(private_pem)
    assert before in message
    assert not verify(message.replace(before, after), public_b64)


def test_adding_a_signed_header_later_fails(domain_key: tuple[bytes, str]) -> None:
    private_pem, public_b64 = domain_key
    message = signed_message(private_pem)
    head, body = message.split(b"\r\n\r\n", 1)
    assert verify(head + b"\r\nX-Added-By-Relay: fine\r\n\r\n" + body, public_b64)
    assert not verify(head + b"\r\nReply-To: evil@example.com\r\n\r\n" + body, public_b64)


def test_wrong_key_fails(domain_key: tuple[bytes, str]) -> None:
    other_pem, _ = generate_domain_key()
    assert not verify(signed_message(other_pem), domain_key[1])


def test_unusable_keys_are_rejected() -> None:
    with pytest.raises(DkimKeyError):
        DkimSigner("acme.com", "s", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
