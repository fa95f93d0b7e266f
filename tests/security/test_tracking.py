from __future__ import annotations

import string

import pytest

from schemas.ids import new_id
from security.base64url import decode, encode
from security.tracking import ClickToken, OpenToken, TrackingTokens, UnsubscribeToken

KEY = bytes(range(32))
MESSAGE_ID = new_id("msg")
LIST_ID = new_id("lst")
RECIPIENT = "ana.silva@example.com"

PAYLOADS = [
    ("o", OpenToken("acme", MESSAGE_ID, RECIPIENT)),
    ("c", ClickToken("acme", MESSAGE_ID, RECIPIENT, 3)),
    ("u", UnsubscribeToken("acme", MESSAGE_ID, RECIPIENT, LIST_ID, "list")),
    ("u", UnsubscribeToken("acme", MESSAGE_ID, RECIPIENT, None, "workspace")),
    ("c", ClickToken("acme", "msg_legacy-id", RECIPIENT, 0)),
]


@pytest.mark.parametrize(("kind", "payload"), PAYLOADS)
def test_an_issued_token_reads_back_as_its_payload(kind: str, payload: object) -> None:
    tokens = TrackingTokens(KEY)
    assert tokens.read(kind, tokens.issue(payload)) == payload  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "payload"), PAYLOADS[:3])
def test_every_single_character_alteration_reads_as_none(kind: str, payload: object) -> None:
    tokens = TrackingTokens(KEY)
    token = tokens.issue(payload)  # type: ignore[arg-type]
    # The whole alphabet: the last character's low bits are not always used, so only a strict decoder
    # refuses the neighbours of the true last character.
    alphabet = string.ascii_letters + string.digits + "-_"
    for position in range(len(token)):
        for replacement in alphabet:
            if replacement == token[position]:
                continue
            altered = token[:position] + replacement + token[position + 1 :]
            assert tokens.read(kind, altered) is None, (position, replacement)
    assert tokens.read(kind, token[:-1]) is None
    assert tokens.read(kind, token + "A") is None
    assert tokens.read(kind, token + "=") is None


def test_a_token_of_another_kind_reads_as_none() -> None:
    tokens = TrackingTokens(KEY)
    click = tokens.issue(ClickToken("acme", MESSAGE_ID, RECIPIENT, 0))
    opened = tokens.issue(OpenToken("acme", MESSAGE_ID, RECIPIENT))
    assert tokens.read("u", click) is None
    assert tokens.read("o", click) is None
    assert tokens.read("c", opened) is None
    assert tokens.read("x", click) is None


def test_a_token_under_another_key_reads_as_none() -> None:
    token = TrackingTokens(KEY).issue(OpenToken("acme", MESSAGE_ID, RECIPIENT))
    assert TrackingTokens(bytes(32)).read("o", token) is None


@pytest.mark.parametrize("token", ["", "A", "!!!", "A" * 2000, encode(b"\x01" + bytes(40))])
def test_garbage_reads_as_none(token: str) -> None:
    assert TrackingTokens(KEY).read("o", token) is None


def test_no_id_or_address_is_readable_in_the_token() -> None:
    tokens = TrackingTokens(KEY)
    token = tokens.issue(UnsubscribeToken("acme", MESSAGE_ID, RECIPIENT, LIST_ID, "list"))
    raw = decode(token)
    for secret in ("acme", MESSAGE_ID, MESSAGE_ID[4:], LIST_ID[4:], RECIPIENT, "ana.silva", "example"):
        assert secret not in token
        assert secret.encode() not in raw
    assert all(ch.isalnum() or ch in "-_" for ch in token)


def test_tokens_of_different_links_and_recipients_differ() -> None:
    tokens = TrackingTokens(KEY)
    issued = {
        tokens.issue(ClickToken("acme", MESSAGE_ID, RECIPIENT, 0)),
        tokens.issue(ClickToken("acme", MESSAGE_ID, RECIPIENT, 1)),
        tokens.issue(ClickToken("acme", MESSAGE_ID, "bo@example.org", 0)),
        tokens.issue(ClickToken("acme", new_id("msg"), RECIPIENT, 0)),
    }
    assert len(issued) == 4


def test_typical_tokens_are_short() -> None:
    tokens = TrackingTokens(KEY)
    click = tokens.issue(ClickToken("acme", MESSAGE_ID, RECIPIENT, 12))
    unsubscribe = tokens.issue(UnsubscribeToken("acme", MESSAGE_ID, RECIPIENT, LIST_ID, "list"))
    assert len(click) <= 100
    assert len(unsubscribe) <= 130
    long_click = tokens.issue(
        ClickToken(new_id("ws"), MESSAGE_ID, "firstname.lastname@mail.subdomain.example.com", 12)
    )
    assert len(long_click) < 150


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        TrackingTokens(b"short")
