"""Routing: which servers may take a message, in which order."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from actors.policies.routing import (
    MessageFacts,
    RouteDecision,
    RoutingRule,
    RuleMatch,
    ServerView,
    Target,
    choose_servers,
)

SERVERS = [
    ServerView("srv_b", 2, "healthy", provider="mailgun"),
    ServerView("srv_a", 1, "healthy", provider="amazon-ses"),
    ServerView("srv_tie", 2, "healthy", provider="resend"),
    ServerView("srv_slow", 0, "degraded", provider="postmark"),
    ServerView("srv_dead", 0, "down", provider="sendgrid"),
    ServerView("srv_acme", 5, "healthy", domains=["Acme.com"], provider="smtp"),
]


def facts(
    from_domain: str = "acme.com",
    to: tuple[str, ...] = ("example.com",),
    purpose: str | None = None,
    tags: tuple[str, ...] = (),
) -> MessageFacts:
    return MessageFacts(purpose, from_domain, list(to), list(tags))


def route(message: MessageFacts, rules: list[RoutingRule], *, seed: int = 0, **kwargs: str) -> RouteDecision:
    return choose_servers(message, rules, SERVERS, rng=random.Random(seed), **kwargs)


def rule(
    rule_id: str,
    priority: int,
    targets: list[str],
    *,
    strategy: str = "priority",
    fallback: bool = False,
    **match: object,
) -> RoutingRule:
    return RoutingRule(
        rule_id,
        rule_id,
        priority,
        RuleMatch(**match),
        strategy,  # type: ignore[arg-type]
        [Target(t) for t in targets],
        fallback,
    )


def test_without_rules_healthy_servers_by_priority_then_degraded_down_excluded() -> None:
    decision = route(facts(), [])
    assert decision == RouteDecision(["srv_a", "srv_b", "srv_tie", "srv_acme", "srv_slow"], None, "default")


@pytest.mark.parametrize(
    ("from_domain", "acme_allowed"),
    [
        ("acme.com", True),
        ("mail.acme.com", True),
        ("ACME.COM", True),
        ("notacme.com", False),
        ("other.org", False),
    ],
)
def test_domain_scoped_server_sends_only_for_its_domains_and_subdomains(
    from_domain: str, acme_allowed: bool
) -> None:
    assert ("srv_acme" in route(facts(from_domain), []).candidates) is acme_allowed


def test_lowest_priority_number_wins_and_ties_go_by_id() -> None:
    rules = [rule("rul_late", 20, ["srv_b"]), rule("rul_z", 10, ["srv_tie"]), rule("rul_y", 10, ["srv_a"])]
    decision = route(facts(), rules)
    assert decision == RouteDecision(["srv_a"], "rul_y", "rule")


@pytest.mark.parametrize(
    ("match", "message", "matches"),
    [
        ({"purpose": "transactional"}, facts(purpose="transactional"), True),
        ({"purpose": "transactional"}, facts(purpose="marketing"), False),
        ({"purpose": "transactional"}, facts(purpose=None), False),
        ({"from_domains": ["acme.com"]}, facts("ACME.com"), True),
        ({"from_domains": ["acme.com"]}, facts("news.acme.com"), False),
        ({"from_domains": ["*.acme.com"]}, facts("news.acme.com"), True),
        ({"from_domains": ["*.acme.com"]}, facts("a.b.acme.com"), True),
        ({"from_domains": ["*.acme.com"]}, facts("acme.com"), False),
        ({"from_domains": ["*.acme.com"]}, facts("evilacme.com"), False),
        ({"from_domains": ["bücher.de"]}, facts("xn--bcher-kva.de"), True),
        ({"to_domains": ["gmail.com", "*.edu"]}, facts(to=("gmail.com", "cs.mit.edu")), True),
        ({"to_domains": ["gmail.com"]}, facts(to=("gmail.com", "yahoo.com")), False),
        ({"to_domains": ["gmail.com"]}, facts(to=("GMail.com",)), True),
        ({"to_domains": ["gmail.com"]}, facts(to=()), False),
        ({"tags": ["a", "b"]}, facts(tags=("b", "z")), True),
        ({"tags": ["a", "b"]}, facts(tags=("z",)), False),
        ({"purpose": "marketing", "tags": ["news"]}, facts(purpose="marketing", tags=("news",)), True),
        ({"purpose": "marketing", "tags": ["news"]}, facts(purpose="marketing", tags=("other",)), False),
        ({}, facts(), True),
    ],
)
def test_match_fields(match: dict[str, object], message: MessageFacts, matches: bool) -> None:
    decision = route(message, [rule("rul_1", 1, ["srv_tie"], **match)])
    assert (decision.rule_id == "rul_1") is matches
    assert (decision.candidates == ["srv_tie"]) is matches


def test_priority_strategy_keeps_listed_order_skips_down_and_ineligible_degraded_last() -> None:
    targets = ["srv_slow", "srv_dead", "srv_tie", "srv_acme", "srv_nope", "srv_b", "srv_tie"]
    assert route(facts("acme.com"), [rule("r", 1, targets)]).candidates == [
        "srv_tie",
        "srv_acme",
        "srv_b",
        "srv_slow",
    ]
    assert route(facts("other.org"), [rule("r", 1, targets)]).candidates == ["srv_tie", "srv_b", "srv_slow"]


def test_weighted_primary_follows_the_weights_over_10k_picks() -> None:
    weighted = RoutingRule(
        "r",
        "r",
        1,
        RuleMatch(),
        "weighted",
        [Target("srv_a", 70), Target("srv_b", 20), Target("srv_tie", 10), Target("srv_dead", 50)],
    )
    rng = random.Random(42)
    firsts = Counter()
    for _ in range(10_000):
        candidates = choose_servers(facts(), [weighted], SERVERS, rng=rng).candidates
        firsts[candidates[0]] += 1
        rest = [c for c in ["srv_a", "srv_b", "srv_tie"] if c != candidates[0]]
        assert candidates[1:] == rest  # the rest by descending weight; the down one never
    assert set(firsts) == {"srv_a", "srv_b", "srv_tie"}
    for server, share in (("srv_a", 0.7), ("srv_b", 0.2), ("srv_tie", 0.1)):
        assert abs(firsts[server] / 10_000 - share) < 0.02


def test_weighted_is_deterministic_for_a_seed_and_weight_zero_is_never_primary() -> None:
    weighted = RoutingRule("r", "r", 1, RuleMatch(), "weighted", [Target("srv_a", 0), Target("srv_b", 1)])
    picks = {tuple(route(facts(), [weighted], seed=s).candidates) for s in range(50)}
    assert picks == {("srv_b", "srv_a")}
    split = RoutingRule("r", "r", 1, RuleMatch(), "weighted", [Target("srv_a", 1), Target("srv_b", 1)])
    assert [route(facts(), [split], seed=s).candidates for s in range(20)] == [
        route(facts(), [split], seed=s).candidates for s in range(20)
    ]


def test_fallback_appends_the_other_eligible_servers_by_preference() -> None:
    with_fallback = rule("r", 1, ["srv_tie", "srv_dead"], fallback=True)
    assert route(facts("other.org"), [with_fallback]).candidates == ["srv_tie", "srv_a", "srv_b", "srv_slow"]
    without = rule("r", 1, ["srv_tie", "srv_dead"])
    assert route(facts("other.org"), [without]).candidates == ["srv_tie"]


def test_matched_rule_with_no_eligible_target_decides_nothing_is_eligible() -> None:
    decision = route(facts("other.org"), [rule("r", 1, ["srv_dead", "srv_acme"]), rule("s", 2, ["srv_a"])])
    assert decision == RouteDecision([], "r", "no_eligible_server")
    assert route(facts(), [rule("r", 1, [], fallback=True)]).candidates[0] == "srv_a"


def test_no_eligible_server_at_all() -> None:
    servers = [ServerView("srv_x", 1, "down"), ServerView("srv_y", 1, "healthy", domains=["acme.com"])]
    decision = choose_servers(facts("other.org"), [], servers, rng=random.Random(0))
    assert decision == RouteDecision([], None, "no_eligible_server")


@pytest.mark.parametrize(
    ("forced", "from_domain", "expected"),
    [
        ("srv_b", "acme.com", RouteDecision(["srv_b"], None, "forced")),
        ("srv_slow", "acme.com", RouteDecision(["srv_slow"], None, "forced")),
        ("srv_acme", "mail.acme.com", RouteDecision(["srv_acme"], None, "forced")),
        ("srv_acme", "other.org", RouteDecision([], None, "server_domain_not_allowed")),
        ("srv_dead", "acme.com", RouteDecision([], None, "server_down")),
        ("srv_gone", "acme.com", RouteDecision([], None, "server_not_found")),
    ],
)
def test_forced_server(forced: str, from_domain: str, expected: RouteDecision) -> None:
    rules = [rule("r", 1, ["srv_a"], fallback=True)]
    assert route(facts(from_domain), rules, forced_server=forced) == expected


def test_rules_decode_from_json_and_refuse_unknown_fields() -> None:
    body = b"""{"id": "rul_1", "name": "gmail via ses", "priority": 5,
                "match": {"to_domains": ["gmail.com"]}, "strategy": "weighted",
                "targets": [{"server": "srv_a", "weight": 3}], "fallback": true}"""
    decoded = msgspec.json.decode(body, type=RoutingRule)
    assert decoded.targets == [Target("srv_a", 3)] and decoded.fallback
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"id": "r", "name": "r", "priority": 1, "colour": "red"}', type=RoutingRule)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"server": "srv_a", "weight": -1}', type=Target)


def test_weighted_draws_among_healthy_targets_before_degraded_ones() -> None:
    weighted = RoutingRule(
        "r",
        "r",
        1,
        RuleMatch(),
        "weighted",
        [Target("srv_slow", 1000), Target("srv_a", 1), Target("srv_b", 2)],
    )
    decisions = {tuple(route(facts(), [weighted], seed=s).candidates) for s in range(200)}
    assert decisions == {("srv_a", "srv_b", "srv_slow"), ("srv_b", "srv_a", "srv_slow")}
