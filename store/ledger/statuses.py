"""Status transitions of the message ledger: pure rules, and the statuses as the Lua scripts see them.

The scripts never spell a status: `LUA_STATUSES` declares one Lua local per `MessageStatus` member
(`QUEUED`, `SENDING`, ...) and is put in front of every script, so Python and Lua share one list.
"""

from __future__ import annotations

from schemas.message_status import MessageStatus

# A Lua prelude: `local QUEUED = 'queued'` and so on, rendered once from the enum.
LUA_STATUSES = "".join(f"local {status.name} = '{status.value}'\n" for status in MessageStatus)

# What the dispatcher's record ends: a finished message expires after the retention.
FINISHED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.BOUNCED,
        MessageStatus.FAILED,
        MessageStatus.SUPPRESSED,
    }
)

# How far along a message is; a provider's event moves the status only to a higher rank. Statuses not
# listed (failed, suppressed, canceled) are final on our side and never moved by a provider's event.
STATUS_RANK: dict[str, int] = {
    MessageStatus.SCHEDULED: 0,
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DEFERRED: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.BOUNCED: 4,
    MessageStatus.COMPLAINED: 5,
}
STATUS_OF_EVENT = {
    "message.deferred": MessageStatus.DEFERRED,
    "message.delivered": MessageStatus.DELIVERED,
    "message.bounced": MessageStatus.BOUNCED,
    "message.complained": MessageStatus.COMPLAINED,
}


def forward_status(current: str, event_type: str) -> str | None:
    """The status `event_type` moves a message in `current` to, or None if it stays."""
    target = STATUS_OF_EVENT.get(event_type)
    if target is None or current not in STATUS_RANK:
        return None
    return target.value if STATUS_RANK[target] > STATUS_RANK[current] else None
