from __future__ import annotations

import base64
import time

import pytest
import stripe
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from security.webhook_signing import (
    WebhookSignatureError,
    new_webhook_secret,
    sign_delivery,
    verify_mailers,
    verify_standard,
)

BODY = b'{"id":"evt_01J","type":"message.delivered","data":{"note":"caf\xc3\xa9"}}'
EVENT_ID = "evt_01JABCDEFGHJKMNPQRSTVWXYZ0"


def test_new_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    secrets = {new_webhook_secret() for _ in range(5)}
    assert len(secrets) == 5
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_delivery_headers_verify_with_the_standard_webhooks_library() -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, int(time.time()), BODY, [secret])
    assert headers["webhook-id"] == EVENT_ID
    assert Webhook(secret).verify(BODY, headers)["type"] == "message.delivered"


def test_mailers_signature_verifies_with_stripes_library() -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, int(time.time()), BODY, [secret])
    assert stripe.WebhookSignature.verify_header(BODY, headers["Mailers-Signature"], secret, 300)


def test_during_rotation_both_secrets_verify_with_both_libraries() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign_delivery(EVENT_ID, int(time.time()), BODY, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["Mailers-Signature"].count("v1=") == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
        stripe.WebhookSignature.verify_header(BODY, headers["Mailers-Signature"], secret, 300)


def test_a_wrong_secret_fails_both_libraries() -> None:
    headers = sign_delivery(EVENT_ID, int(time.time()), BODY, [new_webhook_secret()])
    stranger = new_webhook_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY, headers["Mailers-Signature"], stranger, 300)


def test_an_altered_body_fails_both_libraries() -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, int(time.time()), BODY, [secret])
    altered = BODY.replace(b"delivered", b"bounced")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(altered, headers)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(altered, headers["Mailers-Signature"], secret, 300)


def test_our_verifiers_accept_any_of_the_signatures_and_return_id_and_time() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign_delivery(EVENT_ID, 1_700_000_000, BODY, [new, old])
    upper = {name.upper(): value for name, value in headers.items()}
    for secret in (old, new):
        assert verify_standard(BODY, upper, secret, now=1_700_000_100) == EVENT_ID
        assert verify_mailers(BODY, headers["Mailers-Signature"], secret, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize("now", [1_700_000_000 - 301, 1_700_000_000 + 301])
def test_our_verifiers_refuse_timestamps_outside_the_tolerance(now: int) -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, 1_700_000_000, BODY, [secret])
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_standard(BODY, headers, secret, now=now)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_mailers(BODY, headers["Mailers-Signature"], secret, now=now)


def test_our_verifiers_refuse_a_wrong_secret_a_changed_body_and_a_changed_id() -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, 1_700_000_000, BODY, [secret])
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify_standard(BODY, headers, new_webhook_secret(), now=1_700_000_000)
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify_mailers(BODY, headers["Mailers-Signature"], new_webhook_secret(), now=1_700_000_000)
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify_standard(BODY + b" ", headers, secret, now=1_700_000_000)
    with pytest.raises(WebhookSignatureError, match="no signature"):
        verify_standard(BODY, {**headers, "webhook-id": "evt_other"}, secret, now=1_700_000_000)


@pytest.mark.parametrize(
    "header", [None, "", "t=1700000000", "v1=abc", "t=1700000000,t=1700000001,v1=abc", "t=soon,v1=abc"]
)
def test_malformed_mailers_headers_are_refused(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_mailers(BODY, header, new_webhook_secret(), now=1_700_000_000)


def test_missing_standard_headers_are_refused() -> None:
    secret = new_webhook_secret()
    headers = sign_delivery(EVENT_ID, 1_700_000_000, BODY, [secret])
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {key: value for key, value in headers.items() if key != name}
        with pytest.raises(WebhookSignatureError, match="missing"):
            verify_standard(BODY, partial, secret, now=1_700_000_000)


def test_signing_needs_a_secret_and_a_clean_event_id() -> None:
    with pytest.raises(ValueError):
        sign_delivery(EVENT_ID, 1, BODY, [])
    with pytest.raises(ValueError):
        sign_delivery("evt.1", 1, BODY, [new_webhook_secret()])
    with pytest.raises(ValueError):
        sign_delivery(EVENT_ID, 1, BODY, ["not-a-secret"])
