"""README.md: the two commands come first, and every file it links exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
LINKS = set(re.findall(r"\]\(([^)#]+)\)", README))


def test_every_local_link_exists() -> None:
    local = {link for link in LINKS if "://" not in link}
    assert local and all((ROOT / link).exists() for link in local), sorted(
        x for x in local if not (ROOT / x).exists()
    )


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, flags=re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make serve", "make test"]
