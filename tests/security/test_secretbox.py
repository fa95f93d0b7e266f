from __future__ import annotations

import pytest

from security.secretbox import SecretBox, SecretBoxError, derive_key, generate_master_key

MASTER = "m" * 40


def test_seal_then_open_returns_the_plaintext_and_hides_it() -> None:
    box = SecretBox.from_master_key(MASTER, "credentials")
    sealed = box.seal(b"sk_live_provider_password", b"srv_1")
    assert sealed.startswith("v1.")
    assert "provider" not in sealed
    assert box.open(sealed, b"srv_1") == b"sk_live_provider_password"


def test_sealing_twice_gives_different_text() -> None:
    box = SecretBox.from_master_key(MASTER, "credentials")
    assert box.seal(b"same") != box.seal(b"same")


def test_every_altered_character_is_refused() -> None:
    box = SecretBox.from_master_key(MASTER, "credentials")
    sealed = box.seal(b"secret")
    for position in range(len(sealed)):
        replacement = "A" if sealed[position] != "A" else "B"
        altered = sealed[:position] + replacement + sealed[position + 1 :]
        with pytest.raises(SecretBoxError):
            box.open(altered)


@pytest.mark.parametrize("token", ["", "v1.", "v2.AAAA", "v1.AAAA", "garbage", "v1.!!!!"])
def test_malformed_values_are_refused(token: str) -> None:
    with pytest.raises(SecretBoxError):
        SecretBox.from_master_key(MASTER, "credentials").open(token)


def test_wrong_purpose_wrong_master_or_wrong_associated_data_cannot_open() -> None:
    sealed = SecretBox.from_master_key(MASTER, "credentials").seal(b"secret", b"srv_1")
    with pytest.raises(SecretBoxError):
        SecretBox.from_master_key(MASTER, "webhooks").open(sealed, b"srv_1")
    with pytest.raises(SecretBoxError):
        SecretBox.from_master_key("n" * 40, "credentials").open(sealed, b"srv_1")
    with pytest.raises(SecretBoxError):
        SecretBox.from_master_key(MASTER, "credentials").open(sealed, b"srv_2")


def test_derived_keys_are_stable_per_purpose_and_distinct_across_purposes() -> None:
    assert derive_key(MASTER, "tracking") == derive_key(MASTER, "tracking")
    assert len(derive_key(MASTER, "tracking")) == 32
    assert derive_key(MASTER, "tracking") != derive_key(MASTER, "audit-signing")
    assert derive_key(MASTER, "tracking") != derive_key("n" * 40, "tracking")


def test_short_master_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        derive_key("short", "tracking")


def test_generated_master_keys_are_long_url_safe_and_random() -> None:
    keys = {generate_master_key() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert len(key) >= 32
        assert all(ch.isalnum() or ch in "-_" for ch in key)
        SecretBox.from_master_key(key, "credentials")


OLD, NEW = "o" * 40, "n" * 40


def test_a_rotated_box_opens_old_seals_and_seals_only_under_the_new_key():
    sealed_old = SecretBox.from_master_key(OLD, "credentials").seal(b"smtp-pass", b"srv_1")
    rotating = SecretBox.from_master_key(NEW, "credentials", [OLD])
    assert rotating.open(sealed_old, b"srv_1") == b"smtp-pass"
    sealed_new = rotating.seal(b"other", b"srv_2")
    with pytest.raises(SecretBoxError):
        SecretBox.from_master_key(OLD, "credentials").open(sealed_new, b"srv_2")


def test_reseal_moves_a_token_to_the_new_key_once():
    sealed_old = SecretBox.from_master_key(OLD, "credentials").seal(b"smtp-pass", b"srv_1")
    rotating = SecretBox.from_master_key(NEW, "credentials", [OLD])
    resealed = rotating.reseal(sealed_old, b"srv_1")
    assert resealed is not None and rotating.reseal(resealed, b"srv_1") is None
    new_only = SecretBox.from_master_key(NEW, "credentials")  # the old key dropped
    assert new_only.open(resealed, b"srv_1") == b"smtp-pass"
    with pytest.raises(SecretBoxError):
        new_only.open(sealed_old, b"srv_1")
