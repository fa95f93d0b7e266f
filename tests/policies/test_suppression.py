"""Suppression: scopes, the filter, normal forms, and stable sharding."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from actors.policies.suppression import SuppressionSet, normalise_email, shard_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Ana@Example.COM", "ana@example.com"),
        ("  bo@bücher.de ", "bo@xn--bcher-kva.de"),
        ("BO@BÜCHER.DE.", "bo@xn--bcher-kva.de"),
        ("x@xn--bcher-kva.de", "x@xn--bcher-kva.de"),
    ],
)
def test_normal_form(raw: str, normal: str) -> None:
    assert normalise_email(raw) == normal


@pytest.mark.parametrize("bad", ["no-at-sign", "@example.com", "a@", "a@b..com"])
def test_normal_form_refuses_non_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_email(bad)


def suppressions() -> SuppressionSet:
    s = SuppressionSet()
    s.add("glob@x.com", "global", reason="complaint")
    s.add("ws@x.com", "workspace", reason="bounce")
    s.add("dom@x.com", "domain", "acme.com", reason="unsubscribe")
    s.add("list@x.com", "list", "lst_news", reason="unsubscribe")
    return s


def test_filter_applies_each_scope_keeps_order_and_the_addresses_as_given() -> None:
    recipients = ["ok@x.com", "GLOB@x.com", "dom@x.com", "ws@X.com", "list@x.com", "also-ok@y.org"]
    allowed, suppressed = suppressions().filter(recipients, sending_domain="acme.com", list_ids=["lst_news"])
    assert allowed == ["ok@x.com", "also-ok@y.org"]
    assert suppressed == [
        ("GLOB@x.com", "global", "complaint"),
        ("dom@x.com", "domain", "unsubscribe"),
        ("ws@X.com", "workspace", "bounce"),
        ("list@x.com", "list", "unsubscribe"),
    ]


@pytest.mark.parametrize(
    ("sending_domain", "suppressed"),
    [
        ("acme.com", True),
        ("news.acme.com", True),
        ("ACME.COM", True),
        ("notacme.com", False),
        ("acme.org", False),
    ],
)
def test_domain_scope_covers_the_sending_domain_and_its_subdomains(
    sending_domain: str, suppressed: bool
) -> None:
    allowed, _ = suppressions().filter(["dom@x.com"], sending_domain=sending_domain)
    assert (allowed == []) is suppressed


def test_list_scope_applies_only_to_sends_for_that_list() -> None:
    s = suppressions()
    assert s.filter(["list@x.com"], sending_domain="acme.com")[0] == ["list@x.com"]
    assert s.filter(["list@x.com"], sending_domain="acme.com", list_ids=["lst_other"])[0] == ["list@x.com"]
    assert s.filter(["list@x.com"], sending_domain="acme.com", list_ids=["lst_other", "lst_news"])[0] == []


def test_the_broadest_scope_is_reported() -> None:
    s = SuppressionSet()
    s.add("ana@x.com", "list", "lst_1", reason="unsubscribe")
    s.add("ana@x.com", "domain", "acme.com", reason="manual")
    s.add("ana@x.com", "workspace", reason="bounce")
    _, suppressed = s.filter(["ana@x.com"], sending_domain="acme.com", list_ids=["lst_1"])
    assert suppressed == [("ana@x.com", "workspace", "bounce")]
    s.remove("ana@x.com", "workspace")
    _, suppressed = s.filter(["ana@x.com"], sending_domain="acme.com", list_ids=["lst_1"])
    assert suppressed == [("ana@x.com", "domain", "manual")]


def test_add_and_remove_report_what_changed_and_stay_in_their_scope() -> None:
    s = SuppressionSet()
    assert s.add("Ana@Bücher.de", "domain", "Acme.com", reason="manual")
    assert not s.add("ana@xn--bcher-kva.de", "domain", "acme.com", reason="complaint")
    assert s.filter(["ana@bücher.de"], sending_domain="acme.com")[1] == [
        ("ana@bücher.de", "domain", "complaint")
    ]
    assert not s.remove("ana@bücher.de", "workspace")
    assert not s.remove("ana@bücher.de", "domain", "other.com")
    assert len(s) == 1
    assert s.remove("ANA@bücher.de", "domain", "acme.com")
    assert len(s) == 0
    assert s.filter(["ana@bücher.de"], sending_domain="acme.com") == (["ana@bücher.de"], [])


def test_scope_values_and_reasons_are_checked() -> None:
    s = SuppressionSet()
    with pytest.raises(ValueError):
        s.add("a@x.com", "domain")
    with pytest.raises(ValueError):
        s.add("a@x.com", "list", "")
    with pytest.raises(ValueError):
        s.add("a@x.com", "global", "acme.com")
    with pytest.raises(ValueError):
        s.add("a@x.com", "planet", "earth")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.add("a@x.com", "workspace", reason="dislike")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.add("not an email", "workspace")
    assert len(s) == 0


def test_installation_wide_set_composes_with_a_workspace_set() -> None:
    installation, workspace = SuppressionSet(), SuppressionSet()
    installation.add("spamtrap@x.com", "global", reason="complaint")
    workspace.add("gone@x.com", "workspace", reason="bounce")
    first_allowed, first_out = installation.filter(
        ["a@x.com", "spamtrap@x.com", "gone@x.com"], sending_domain="acme.com"
    )
    allowed, more_out = workspace.filter(first_allowed, sending_domain="acme.com")
    assert allowed == ["a@x.com"]
    assert first_out + more_out == [
        ("spamtrap@x.com", "global", "complaint"),
        ("gone@x.com", "workspace", "bounce"),
    ]


def test_shard_for_is_crc32_pinned_and_spreads_workspaces() -> None:
    assert [shard_for(w, 16) for w in ("acme", "default", "ws_01J0000000000000000000000")] == [14, 15, 7]
    counts = Counter(shard_for(f"ws_{i}", 8) for i in range(4_000))
    assert set(counts) == set(range(8)) and max(counts.values()) < 1.2 * 500
    with pytest.raises(ValueError):
        shard_for("acme", 0)


def test_shard_for_agrees_across_processes_with_different_hash_seeds() -> None:
    code = (
        "from actors.policies.suppression import shard_for; print([shard_for(f'w{i}', 7) for i in range(50)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {str([shard_for(f"w{i}", 7) for i in range(50)]) + "\n"}
