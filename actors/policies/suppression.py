"""Who must not be mailed: suppressions by scope, and the filter every send passes through.

Scopes, broadest first (a recipient suppressed in several is reported under the broadest):
- global: every send through this set;
- workspace: every send of the workspace (the scope automatic bounce/complaint/unsubscribe
  suppressions use);
- domain: sends from that sending domain or any of its subdomains;
- list: sends on behalf of that list (campaigns, automations), named by `list_ids`.
A `SuppressionSet` holds one workspace's entries. Installation-wide suppressions live in a set of
their own; the shard filters through it first and through the workspace's set second.
Memory: one normalised address string per entry, reasons are shared interned constants.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

from schemas.domain_names import normalise_domain, normalise_email

__all__ = ["REASONS", "SCOPES", "SuppressionSet", "normalise_email", "shard_for"]

Scope = Literal["global", "workspace", "domain", "list"]
Reason = Literal["unsubscribe", "bounce", "complaint", "manual"]
SCOPES: tuple[Scope, ...] = ("global", "workspace", "domain", "list")
REASONS: tuple[Reason, ...] = ("unsubscribe", "bounce", "complaint", "manual")
_REASON_BY_NAME: dict[str, Reason] = {reason: reason for reason in REASONS}


LIST_ID_KEY = "list_id"


def list_scope(metadata: dict[str, str]) -> list[str]:
    """The lists a message is sent for: campaign and automation mail carries `metadata.list_id`, which
    makes the list-scope suppressions of that list apply to it (an unsubscribe from the list). A
    campaign over several lists names each list its recipient is subscribed to, comma-separated."""
    return split_lists(metadata.get(LIST_ID_KEY))


def split_lists(value: str | None) -> list[str]:
    """`metadata.list_id` (and an unsubscribe token's `list_id`): one list id, or several joined by ","."""
    return [part for part in (value or "").split(",") if part]


def shard_for(workspace: str, n_shards: int) -> int:
    """The SuppressionShard that owns `workspace`: stable across processes and restarts.

    Python's `hash()` of a str is salted per process, so it would send one workspace to
    different shards from different ingress processes; crc32 does not.
    """
    if n_shards < 1:
        raise ValueError("n_shards must be at least 1")
    return zlib.crc32(workspace.encode()) % n_shards


class SuppressionSet:
    def __init__(self) -> None:
        self._global: dict[str, Reason] = {}
        self._workspace: dict[str, Reason] = {}
        self._by_domain: dict[str, dict[str, Reason]] = {}
        self._by_list: dict[str, dict[str, Reason]] = {}

    def add(
        self, email: str, scope: Scope, scope_value: str | None = None, reason: Reason = "manual"
    ) -> bool:
        """Suppress `email` in `scope` (a later add replaces the reason). True if it was new."""
        if reason not in _REASON_BY_NAME:
            raise ValueError(f"unknown suppression reason {reason!r}")
        key = normalise_email(email)
        entries = self._entries(scope, scope_value, create=True)
        is_new = key not in entries
        entries[key] = _REASON_BY_NAME[reason]
        return is_new

    def remove(self, email: str, scope: Scope, scope_value: str | None = None) -> bool:
        """Lift the suppression of `email` in `scope`. True if there was one."""
        entries = self._entries(scope, scope_value, create=False)
        removed = entries.pop(normalise_email(email), None) is not None
        self._drop_empty(scope, scope_value)
        return removed

    def filter(
        self, recipients: list[str], *, sending_domain: str, list_ids: Sequence[str] = ()
    ) -> tuple[list[str], list[tuple[str, Scope, Reason]]]:
        """Split `recipients` (kept as given, in order) into allowed and (email, scope, reason)."""
        tables = self._tables_for(sending_domain, list_ids)
        allowed: list[str] = []
        suppressed: list[tuple[str, Scope, Reason]] = []
        for email in recipients:
            key = normalise_email(email)
            hit = next(((scope, entries[key]) for scope, entries in tables if key in entries), None)
            if hit is None:
                allowed.append(email)
            else:
                suppressed.append((email, *hit))
        return allowed, suppressed

    def __len__(self) -> int:
        scoped = [*self._by_domain.values(), *self._by_list.values()]
        return len(self._global) + len(self._workspace) + sum(len(entries) for entries in scoped)

    def _tables_for(
        self, sending_domain: str, list_ids: Sequence[str]
    ) -> list[tuple[Scope, dict[str, Reason]]]:
        """The entry tables that apply to one send, broadest scope first."""
        tables: list[tuple[Scope, dict[str, Reason]]] = [
            ("global", self._global),
            ("workspace", self._workspace),
        ]
        tables += [
            ("domain", self._by_domain[d]) for d in _self_and_parents(sending_domain) if d in self._by_domain
        ]
        tables += [("list", self._by_list[lid]) for lid in list_ids if lid in self._by_list]
        return tables

    def _entries(self, scope: Scope, scope_value: str | None, *, create: bool) -> dict[str, Reason]:
        if scope in ("global", "workspace"):
            if scope_value is not None:
                raise ValueError(f"scope {scope!r} takes no scope_value")
            return self._global if scope == "global" else self._workspace
        table, name = self._scoped_table(scope, scope_value)
        if create:
            return table.setdefault(name, {})
        return table.get(name, {})

    def _scoped_table(self, scope: str, scope_value: str | None) -> tuple[dict[str, dict[str, Reason]], str]:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if not scope_value:
            raise ValueError(f"scope {scope!r} needs a scope_value")
        if scope == "domain":
            return self._by_domain, normalise_domain(scope_value)
        return self._by_list, scope_value

    def _drop_empty(self, scope: Scope, scope_value: str | None) -> None:
        if scope in ("domain", "list"):
            table, name = self._scoped_table(scope, scope_value)
            if not table.get(name, True):
                del table[name]


def _self_and_parents(domain: str) -> list[str]:
    """`a.b.acme.com` → [`a.b.acme.com`, `b.acme.com`, `acme.com`, `com`]."""
    labels = normalise_domain(domain).split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]
