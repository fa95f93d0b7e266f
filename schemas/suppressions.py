"""Suppressions: who must not be mailed, by scope (global, workspace, sending domain, list).

`SuppressionEntry` is what callers add (the API, bounce/complaint/unsubscribe consumers);
`SuppressionRecord` is what Redis holds (a msgpack map the store's Lua scripts read: keep its values
strings); `Suppressed` is one recipient a check removed, as the SuppressionShard reports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Scope = Literal["global", "workspace", "domain", "list"]
Reason = Literal["unsubscribe", "bounce", "complaint", "manual"]
EmailText = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
MAX_EMAILS = 1000


class SuppressionEntry(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    email: str
    reason: Reason = "manual"
    scope: Scope = "workspace"
    scope_value: str | None = None  # the sending domain (scope domain) or list id (scope list)
    source: str = "api"  # api | bounce | complaint | unsubscribe | … (who added it)


class SuppressionRecord(msgspec.Struct, kw_only=True):
    id: str  # a ULID: sorts by creation time, carries created_at
    email: str
    scope: Scope
    scope_value: str | None = None
    reason: Reason
    source: str


class Suppressed(msgspec.Struct, frozen=True, array_like=True):
    email: str  # as the caller gave it
    scope: Scope  # the broadest scope that suppresses it
    reason: Reason


class CreateSuppressions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Give `email` or `emails` (up to 1,000), not both."""

    email: EmailText | None = None
    emails: Annotated[list[EmailText], msgspec.Meta(min_length=1, max_length=MAX_EMAILS)] | None = None
    reason: Reason = "manual"
    scope: Scope = "workspace"
    scope_value: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None


class Suppression(msgspec.Struct, kw_only=True):
    email: str
    reason: Reason
    scope: Scope
    scope_value: str | None
    source: str
    created_at: datetime
    object: str = "suppression"


class SuppressionList(msgspec.Struct, kw_only=True):
    data: list[Suppression]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class CreatedSuppressions(msgspec.Struct, kw_only=True):
    data: list[Suppression]
    created: int  # how many were not suppressed in that scope before
    object: str = "list"


class SuppressionDeletion(msgspec.Struct, kw_only=True):
    email: str
    deleted: list[Suppression]
    object: str = "suppression_deletion"
