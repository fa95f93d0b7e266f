"""The curl examples of the docs, run as written against a live app (a real port, real Redis and Ray).

Every ```sh block of a listed page is run in order in one bash (`set -euo pipefail`), with
`$MAILERS_URL` and `$MAILERS_KEY` set; `curl -f` and `jq -e` make a wrong answer fail the test. A page
joins by being listed in PAGES.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.pipeline.conftest import sink, smtp_server  # noqa: F401  (fixtures: the sends need a server)

ROOT = Path(__file__).parents[2]
PAGES = ["docs/templates.md", "docs/audience.md"]
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def examples(page: str) -> str:
    return "\n".join(SH_BLOCK.findall((ROOT / page).read_text()))


@pytest.mark.parametrize("page", PAGES)
async def test_curl_examples_run(page, client, admin, smtp_server):  # noqa: F811
    script = examples(page)
    assert "curl" in script
    secret = admin["Authorization"].removeprefix("Bearer ")
    env = {
        "MAILERS_URL": str(client.make_url("")).rstrip("/"),
        "MAILERS_KEY": secret,
        "PATH": "/usr/bin:/bin",
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "set -euo pipefail\n" + script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out.decode(), err.decode())
