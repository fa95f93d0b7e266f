"""10,000 subscribers over SMTP into an aiosmtpd sink: each exactly once, personalised, with the RFC 8058
headers (the runner body on real Redis, the session's real dispatchers)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.campaigns.conftest import (
    drive,
    header_fields,
    runner,
    smtp_campaign,
)

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
async def test_ten_thousand_subscribers_each_get_exactly_one_personalised_message(client, make_key, sink):
    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 10_000)
    done = await drive(runner(client, in_flight=2000, chunk=500), client, headers, campaign_id, within=540)
    counts = Counter(to for d in sink.deliveries for to in d.rcpt_tos)
    assert set(counts) == set(emails) and max(counts.values()) == 1
    for delivery in sink.deliveries:
        message = header_fields(delivery)
        i = int(delivery.rcpt_tos[0][1:].split("@")[0])
        assert message["Subject"] == f"Hi P{i}"
        assert message["List-Unsubscribe"].startswith("<https://mailers.test/t/u/")
        assert "<mailto:unsubscribe+" in message["List-Unsubscribe"]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert done["counters"] == {
        "audience": 10_000,
        "queued": 0,
        "sent": 10_000,
        "delivered": done["counters"]["delivered"],
        "failed": 0,
        "suppressed": 0,
        "remaining": 0,
    }
