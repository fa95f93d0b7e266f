"""msgspec's error locations as JSON pointers (schemas/problems.py), one converter for every route."""

from __future__ import annotations

import pytest

from schemas.problems import pointer_from_location


@pytest.mark.parametrize(
    ("where", "pointer"),
    [
        ("`$.messages[3].to`", "/messages/3/to"),
        ("`$`", ""),
        ("`$.attributes[...]`", "/attributes"),
        ("`$.attributes[...][1]`", "/attributes"),
        ("`key` in `$.attributes`", "/attributes"),
        ("`$.headers.x-mailers`", "/headers/x-mailers"),
        ("", ""),
    ],
)
def test_locations_become_pointers(where: str, pointer: str) -> None:
    assert pointer_from_location(where) == pointer
