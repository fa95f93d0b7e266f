"""The statuses a message moves through, one enum shared by Python and the ledger's Lua scripts.

The API's `schemas.send.MessageStatus` literal lists the same values except `sending`, which only lives
between a dispatcher's claim and its record (tests/pipeline/test_ledger_statuses.py keeps the two equal).
"""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

from schemas.send import MessageStatus as ApiStatus


class MessageStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for its send_at in the schedule
    QUEUED = "queued"  # on its server's dispatch stream (or waiting for quota or a retry)
    SENDING = "sending"  # claimed by a dispatcher, outcome not yet recorded
    SENT = "sent"
    DEFERRED = "deferred"  # a provider reported a temporary failure after taking it
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELED = "canceled"


# What a client is told of each ledger status. `sending` is internal: to a client the message is still
# queued (the API's schema lists no `sending`, so answering it broke clients that check the schema).
_API_STATUS: dict[str, ApiStatus] = {status: status for status in get_args(ApiStatus)} | {
    MessageStatus.SENDING: "queued"
}


def api_status(status: str) -> ApiStatus:
    """The API's status for a ledger status (a `MessageStatus` value)."""
    return _API_STATUS[status]
