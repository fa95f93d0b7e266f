"""Which sending servers may take a message, in the order to try them.

`choose_servers` is a pure function over the message's facts, the workspace's routing rules and a
view of its servers (health included). The first candidate is the primary; the rest are the
failover order the Dispatcher walks when a server gives up on the message.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import msgspec

from schemas.domain_names import is_within, matches_pattern, normalise_domain, normalise_pattern
from schemas.routing_view import RoutingRule, RuleMatch, ServerView, Status, Target

__all__ = ["RoutingRule", "RuleMatch", "ServerView", "Status", "Target", "choose_servers"]

# Reason codes of a RouteDecision.
FORCED = "forced"
RULE = "rule"
DEFAULT = "default"
NO_ELIGIBLE_SERVER = "no_eligible_server"
SERVER_NOT_FOUND = "server_not_found"
SERVER_DOMAIN_NOT_ALLOWED = "server_domain_not_allowed"
SERVER_DOWN = "server_down"


class MessageFacts(msgspec.Struct, frozen=True):
    purpose: str | None
    from_domain: str
    to_domains: list[str]
    tags: list[str] = []


class RouteDecision(msgspec.Struct, frozen=True):
    candidates: list[str]
    rule_id: str | None
    reason: str


def choose_servers(
    facts: MessageFacts,
    rules: Sequence[RoutingRule],
    servers: Sequence[ServerView],
    *,
    forced_server: str | None = None,
    rng: random.Random,
) -> RouteDecision:
    from_domain = normalise_domain(facts.from_domain)
    by_id = {server.id: server for server in servers}
    if forced_server is not None:
        return _forced(by_id.get(forced_server), from_domain)
    eligible = {s.id: s for s in servers if s.status != "down" and _may_send_for(s, from_domain)}
    rule = next((r for r in sorted(rules, key=_rule_order) if _rule_matches(r.match, facts)), None)
    if rule is None:
        candidates = _by_preference(eligible.values())
        return RouteDecision(candidates, None, DEFAULT if candidates else NO_ELIGIBLE_SERVER)
    candidates = _rule_targets(rule, eligible, rng)
    if rule.fallback:
        candidates += [sid for sid in _by_preference(eligible.values()) if sid not in candidates]
    return RouteDecision(candidates, rule.id, RULE if candidates else NO_ELIGIBLE_SERVER)


def _forced(server: ServerView | None, from_domain: str) -> RouteDecision:
    if server is None:
        return RouteDecision([], None, SERVER_NOT_FOUND)
    if not _may_send_for(server, from_domain):
        return RouteDecision([], None, SERVER_DOMAIN_NOT_ALLOWED)
    if server.status == "down":
        return RouteDecision([], None, SERVER_DOWN)
    return RouteDecision([server.id], None, FORCED)


def _may_send_for(server: ServerView, from_domain: str) -> bool:
    """A server with `domains` sends only for those sending domains and their subdomains."""
    return not server.domains or any(is_within(from_domain, normalise_domain(d)) for d in server.domains)


def _rule_order(rule: RoutingRule) -> tuple[int, str]:
    return rule.priority, rule.id


def _preference(server: ServerView) -> tuple[bool, int, str]:
    return server.status != "healthy", server.priority, server.id


def _by_preference(servers: Iterable[ServerView]) -> list[str]:
    return [s.id for s in sorted(servers, key=_preference)]


def _rule_matches(match: RuleMatch, facts: MessageFacts) -> bool:
    if match.purpose and match.purpose != facts.purpose:
        return False
    if match.from_domains and not _matches_any(normalise_domain(facts.from_domain), match.from_domains):
        return False
    if match.to_domains:
        recipients = [normalise_domain(d) for d in facts.to_domains]
        if not recipients or not all(_matches_any(d, match.to_domains) for d in recipients):
            return False
    return not match.tags or not set(match.tags).isdisjoint(facts.tags)


def _matches_any(domain: str, patterns: list[str]) -> bool:
    return any(matches_pattern(domain, normalise_pattern(p)) for p in patterns)


def _rule_targets(rule: RoutingRule, eligible: dict[str, ServerView], rng: random.Random) -> list[str]:
    """The rule's eligible targets in strategy order, healthy ones before degraded ones."""
    targets: list[Target] = []
    for target in rule.targets:
        if target.server in eligible and all(t.server != target.server for t in targets):
            targets.append(target)
    healthy = [t for t in targets if eligible[t.server].status == "healthy"]
    degraded = [t for t in targets if eligible[t.server].status != "healthy"]
    order = _weighted_order if rule.strategy == "weighted" else _listed_order
    return order(healthy, rng) + order(degraded, rng)


def _listed_order(targets: list[Target], rng: random.Random) -> list[str]:
    return [t.server for t in targets]


def _weighted_order(targets: list[Target], rng: random.Random) -> list[str]:
    """First pick drawn by weight (weight 0 is never drawn); the rest by descending weight."""
    weighted = [t for t in targets if t.weight > 0]
    if not weighted:
        return _listed_order(targets, rng)
    first = rng.choices(weighted, weights=[t.weight for t in weighted])[0]
    rest = sorted((t for t in targets if t is not first), key=lambda t: -t.weight)
    return [first.server, *(t.server for t in rest)]
