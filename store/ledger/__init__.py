"""The message ledger: the one owner of a message's Redis state and of every status transition.

`ledger.py` (the `MessageLedger`), `records.py` (the hash's Structs), `scripts.py` (the Lua, the only
writer of a status), `statuses.py` (the transition rules and the statuses as Lua sees them),
`index_ranges.py` (a packed campaign's ids as one index entry), `archive.py` (its settled messages packed
by bucket), `listing.py` (`GET /v1/messages`).
"""

from store.ledger.ledger import MessageLedger
from store.ledger.records import Claimed, MessageMeta, NewMessage, OutcomeRecord, StoredMessage

__all__ = ["Claimed", "MessageLedger", "MessageMeta", "NewMessage", "OutcomeRecord", "StoredMessage"]
