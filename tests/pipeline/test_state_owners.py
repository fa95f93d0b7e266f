"""One owner per piece of Redis state: only the ledger names a message's keys, only the webhook queue
names the delivery keys. Anything else that did would be a second writer of state whose transitions
the owner's scripts keep consistent."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "security", "store", "providers", "analytics", "actors", "ingress")
# The key helpers of store/keyspace.py, and the key names Lua builds itself.
# (Every module reaches the helpers as `keyspace.x`: store/keyspace.py is imported as a module.)
MESSAGE_KEYS = re.compile(
    r"\bkeyspace\.(message|message_events|message_index|message_ranges|message_archive)\(|:msg:|'msg:'|:messages'"
    r"|'message-ranges'|'arc:'"
)
DELIVERY_KEYS = re.compile(
    r"\bkeyspace\.webhook_(due|lane|deliveries|dead|failing|delivery|attempts|in_flight)\(|\bWEBHOOK_READY\b"
)
OWNERS = {
    "message keys": (MESSAGE_KEYS, "store/ledger/"),
    "delivery keys": (DELIVERY_KEYS, "store/webhook_queue.py"),
}


def sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text()
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def users(pattern: re.Pattern[str]) -> set[str]:
    return {
        name
        for name, text in sources().items()
        if name != "store/keyspace.py" and any(pattern.search(line) for line in _code(text))
    }


def _code(text: str) -> list[str]:
    """The lines without their comments (a comment may name a key it does not touch)."""
    return [line.split("#", 1)[0] for line in text.splitlines()]


def test_only_the_owners_name_their_keys() -> None:
    for what, (pattern, owner) in OWNERS.items():
        strangers = {name for name in users(pattern) if not name.startswith(owner)}
        assert not strangers, f"{what} named outside {owner}: {sorted(strangers)}"


def test_the_patterns_find_the_owners_themselves() -> None:
    """The check above must be able to fail: each pattern matches its owner's own code."""
    for pattern, owner in OWNERS.values():
        assert any(name.startswith(owner) for name in users(pattern))
