"""Routing rules: the API bodies, the stored record and the view (`/v1/routing/rules`).

The fields mirror the pure policy's `RuleMatch` / `Target` / `RoutingRule`
(`actors.policies.routing`); the store turns a record into the policy's Struct for the send path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
DomainPattern = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Purpose = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Strategy = Literal["priority", "weighted"]
MAX_TARGETS = 20


class RoutingMatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every non-empty field must match; an empty match matches every message."""

    purpose: Purpose | None = None
    from_domains: Annotated[list[DomainPattern], msgspec.Meta(max_length=100)] = []
    to_domains: Annotated[list[DomainPattern], msgspec.Meta(max_length=100)] = []
    tags: Annotated[list[Tag], msgspec.Meta(max_length=50)] = []


class RoutingTarget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    weight: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1


Targets = Annotated[list[RoutingTarget], msgspec.Meta(min_length=1, max_length=MAX_TARGETS)]


class CreateRoutingRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    priority: Priority = 100
    match: RoutingMatch = RoutingMatch()
    strategy: Strategy = "priority"
    targets: Targets
    fallback: bool = True


class UpdateRoutingRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field optional; a given field replaces the stored one whole (`match` and `targets` too)."""

    name: Name | None = None
    priority: Priority | None = None
    match: RoutingMatch | None = None
    strategy: Strategy | None = None
    targets: Targets | None = None
    fallback: bool | None = None


class RoutingRuleRecord(msgspec.Struct, kw_only=True):
    id: str
    workspace: str
    name: str
    priority: int
    match: RoutingMatch
    strategy: Strategy
    targets: list[RoutingTarget]
    fallback: bool
    created_at: datetime
    updated_at: datetime


class RoutingRuleView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    priority: int
    match: RoutingMatch
    strategy: Strategy
    targets: list[RoutingTarget]
    fallback: bool
    created_at: datetime
    updated_at: datetime
    object: str = "routing_rule"


class RoutingRuleList(msgspec.Struct, kw_only=True):
    data: list[RoutingRuleView]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedRoutingRule(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "routing_rule"


rule_record_encoder = msgspec.msgpack.Encoder()
rule_record_decoder = msgspec.msgpack.Decoder(RoutingRuleRecord)
