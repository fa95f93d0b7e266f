"""Domain normal forms and patterns, shared by routing, throttles and suppression."""

from __future__ import annotations

import pytest

from schemas.domain_names import is_within, matches_pattern, normalise_domain, normalise_pattern


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("Bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("ÉCOLE.fr", "xn--cole-9oa.fr"),
    ],
)
def test_normalise_domain(raw: str, normal: str) -> None:
    assert normalise_domain(raw) == normal


@pytest.mark.parametrize("bad", ["", ".", "a..b", "ü..de", f"{'a' * 64}.com"])
def test_normalise_domain_refuses_empty_and_long_labels(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_domain(bad)


def test_within_and_patterns() -> None:
    assert is_within("acme.com", "acme.com") and is_within("a.b.acme.com", "acme.com")
    assert not is_within("notacme.com", "acme.com")
    assert matches_pattern("mail.acme.com", normalise_pattern("*.ACME.com"))
    assert not matches_pattern("acme.com", normalise_pattern("*.acme.com"))
    assert not matches_pattern("xacme.com", normalise_pattern("*.acme.com"))
    assert matches_pattern("xn--bcher-kva.de", normalise_pattern("Bücher.de"))
