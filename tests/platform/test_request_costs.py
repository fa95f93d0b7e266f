"""Per-request work made cheaper for issue #14 keeps its results exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from analytics.audit import time_text
from ingress.audit import now_text


def test_the_audit_entrys_time_text_is_the_clocks_millisecond_as_time_text_writes_it():
    for _ in range(2000):  # across many millisecond boundaries
        before = time_text(datetime.now(UTC))
        text = now_text()
        after = time_text(datetime.now(UTC))
        assert len(text) == len(before) == 24 and text.endswith("Z")
        assert before <= text <= after  # fixed width: the text order is the time order
