"""The SMTP reply classification table (pure functions, no server)."""

from __future__ import annotations

import aiosmtplib
import pytest

from providers.base import Outcome, Permanent, RecipientRefusal, Sent, Transient
from providers.smtp import classify_failure, classify_refusals, classify_smtp_reply, recipient_refusal


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (250, "2.0.0 OK", Sent(provider_message_id="")),
        (
            421,
            "4.3.2 Service shutting down",
            Transient("SMTP 421 4.3.2 Service shutting down", retry_after=60.0),
        ),
        (450, "4.2.0 Greylisted", Transient("SMTP 450 4.2.0 Greylisted", retry_after=300.0)),
        (451, "4.3.0 Local error", Transient("SMTP 451 4.3.0 Local error", retry_after=120.0)),
        (
            452,
            "4.3.1 Insufficient storage",
            Transient("SMTP 452 4.3.1 Insufficient storage", retry_after=300.0),
        ),
        (454, "4.7.0 TLS not available", Transient("SMTP 454 4.7.0 TLS not available", retry_after=60.0)),
        (
            535,
            "5.7.8 Bad credentials",
            Transient("SMTP authentication failed: 535 5.7.8 Bad credentials", server_down=True),
        ),
        (
            530,
            "5.7.0 Authentication required",
            Transient("SMTP authentication failed: 530 5.7.0 Authentication required", server_down=True),
        ),
        (554, "5.7.1 Spam", Permanent("SMTP 554 5.7.1 Spam", code="554")),
        (552, "5.3.4 Message too big", Permanent("SMTP 552 5.3.4 Message too big", code="552")),
    ],
)
def test_message_level_replies(code: int, message: str, expected: Outcome) -> None:
    assert classify_smtp_reply(code, message) == expected


@pytest.mark.parametrize(
    ("code", "message", "hard"),
    [
        (550, "5.1.1 User unknown", True),
        (550, "Mailbox unavailable", True),
        (551, "User not local", True),
        (553, "5.1.3 Bad address syntax", True),
        (550, "5.2.1 Account disabled", True),
        (552, "5.2.2 Mailbox full", False),
        (552, "Mailbox full", False),
        (550, "5.2.2 Over quota", False),
        (550, "5.7.1 Rejected by policy", False),
        (554, "Transaction failed", False),
        (451, "4.3.0 Try later", False),
    ],
)
def test_recipient_refusals_hard_or_soft(code: int, message: str, hard: bool) -> None:
    assert recipient_refusal("a@example.com", code, message) == RecipientRefusal(
        "a@example.com", str(code), message, hard
    )


def test_every_recipient_refused() -> None:
    hard = recipient_refusal("a@example.com", 550, "5.1.1 unknown")
    soft = recipient_refusal("b@example.com", 552, "5.2.2 full")
    later = recipient_refusal("c@example.com", 451, "4.3.0 later")
    assert classify_refusals([hard, soft]) == Permanent(
        "every recipient refused: a@example.com: 550 5.1.1 unknown; b@example.com: 552 5.2.2 full",
        code="550",
        bounced=[hard, soft],
    )
    outcome = classify_refusals([hard, later])
    assert isinstance(outcome, Transient) and outcome.retry_after == 120.0


def test_library_errors_are_translated_in_one_place() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@xn--mnchen-3ya.example")]
    )
    outcome = classify_failure(refused, {"a@xn--mnchen-3ya.example": "a@münchen.example"})
    assert isinstance(outcome, Permanent) and outcome.bounced[0].email == "a@münchen.example"
    assert classify_failure(aiosmtplib.SMTPAuthenticationError(535, "nope"), {}) == Transient(
        "SMTP authentication failed: 535 nope", server_down=True
    )
    assert classify_failure(
        aiosmtplib.SMTPSenderRefused(553, "5.7.1 sender not allowed", "x@y"), {}
    ) == Permanent("SMTP 553 5.7.1 sender not allowed", code="553")
    timeout = classify_failure(aiosmtplib.SMTPReadTimeoutError("slow"), {})
    assert isinstance(timeout, Transient) and not timeout.server_down and "timeout" in timeout.reason
    dropped = classify_failure(aiosmtplib.SMTPServerDisconnected("gone"), {})
    assert isinstance(dropped, Transient) and not dropped.server_down
    greeting = classify_failure(aiosmtplib.SMTPConnectResponseError(554, "no SMTP service here"), {})
    assert isinstance(greeting, Transient) and greeting.server_down
    setup = classify_failure(
        aiosmtplib.SMTPException("The SMTP AUTH extension is not supported by this server."), {}
    )
    assert isinstance(setup, Transient) and setup.server_down
