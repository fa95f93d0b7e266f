"""Routing as the pure policy reads it: rules and a view of servers (health included).

The store builds these from its records (`store.routing_rules.policy_rule`, the routing snapshot in
`store/workspace_routing.py`) and `actors.policies.routing.choose_servers` decides over them; they
live here so neither layer imports the other for them. The API's own shapes are `schemas/routing.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Status = Literal["healthy", "degraded", "down"]


class RuleMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every non-empty field must match; an empty match matches every message."""

    purpose: str | None = None
    from_domains: list[str] = []
    to_domains: list[str] = []
    tags: list[str] = []


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: str
    weight: Annotated[int, msgspec.Meta(ge=0)] = 1


class RoutingRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    priority: int
    match: RuleMatch = RuleMatch()
    strategy: Literal["priority", "weighted"] = "priority"
    targets: list[Target] = []
    fallback: bool = False


class ServerView(msgspec.Struct, frozen=True):
    id: str
    priority: int
    status: Status
    domains: list[str] = []
    provider: str = ""
