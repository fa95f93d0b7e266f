from __future__ import annotations

import pytest

from security.unsubscribe import list_unsubscribe_headers


def test_https_and_mailto_with_one_click_post() -> None:
    headers = list_unsubscribe_headers("https://mail.acme.test/t/u/TOKEN", "unsubscribe+TOKEN@acme.test")
    assert headers == {
        "List-Unsubscribe": "<https://mail.acme.test/t/u/TOKEN>, <mailto:unsubscribe+TOKEN@acme.test>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_a_mailto_uri_is_kept_and_mailto_is_optional() -> None:
    with_uri = list_unsubscribe_headers("https://a.test/u", "mailto:u@a.test?subject=unsubscribe")
    assert with_uri["List-Unsubscribe"] == "<https://a.test/u>, <mailto:u@a.test?subject=unsubscribe>"
    assert list_unsubscribe_headers("https://a.test/u", None)["List-Unsubscribe"] == "<https://a.test/u>"


@pytest.mark.parametrize(
    ("url", "mailto"),
    [
        ("http://a.test/u", None),
        ("https://", None),
        ("mailto:u@a.test", None),
        ("https://a.test/u\r\nBcc: victim@x.test", None),
        ("https://a.test/u>, <https://evil.test", None),
        ("https://a.test/u", "u@a.test\r\nX-Evil: 1"),
        ("https://a.test/u", "u@a.test>,<https://evil.test"),
    ],
)
def test_unsafe_or_non_https_uris_are_refused(url: str, mailto: str | None) -> None:
    with pytest.raises(ValueError):
        list_unsubscribe_headers(url, mailto)


@pytest.mark.parametrize("mailto", [None, "u@a.test", "mailto:u@a.test"])
def test_checked_parts_give_the_same_headers_and_skip_only_the_checks(mailto: str | None) -> None:
    url = "https://a.test/t/u/TOKEN"
    assert list_unsubscribe_headers(url, mailto, checked=True) == list_unsubscribe_headers(url, mailto)
    # What the checks would refuse goes through when the caller says it checked it (its responsibility).
    assert list_unsubscribe_headers("http://a.test/u", None, checked=True)["List-Unsubscribe"] == (
        "<http://a.test/u>"
    )
