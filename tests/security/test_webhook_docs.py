"""docs/webhooks.md must stay true: its example delivery and its verification snippets are run here."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from security.webhook_signing import new_webhook_secret, sign_delivery, verify_mailers, verify_standard

DOC = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC, flags=re.DOTALL | re.MULTILINE)
EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = '{"id":"evt_01JDOCS","type":"message.clicked","data":{"url":"https://café.example/ü"}}'.encode()

NODE_DRIVER = """
const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(input.map(({ secret, headers, body }) => {
  const raw = Buffer.from(body, "base64");
  return [
    verifyStandardWebhook(secret, headers, raw),
    verifyMailersSignature(secret, headers["mailers-signature"], raw),
  ];
})));
"""


def _block(language: str) -> str:
    found = [code for lang, code in BLOCKS if lang == language]
    assert len(found) == 1, f"expected one {language} block in docs/webhooks.md"
    return found[0]


def _cases() -> tuple[list[tuple[str, dict[str, str], bytes]], list[bool]]:
    """(secret, lower-cased headers, body) cases and whether each must verify."""
    old, new = new_webhook_secret(), new_webhook_secret()
    now = int(time.time())
    rotating = {k.lower(): v for k, v in sign_delivery("evt_01JDOCS", now, BODY, [new, old]).items()}
    stale = {k.lower(): v for k, v in sign_delivery("evt_01JDOCS", now - 3600, BODY, [new]).items()}
    cases = [
        (old, rotating, BODY),
        (new, rotating, BODY),
        (new_webhook_secret(), rotating, BODY),
        (new, rotating, BODY.replace(b"clicked", b"opened_")),
        (new, stale, BODY),
    ]
    return cases, [True, True, False, False, False]


def test_the_example_delivery_in_the_docs_is_signed_with_the_example_secret() -> None:
    head, _, body = _block("http").strip("\n").partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    timestamp = int(headers["webhook-timestamp"])
    assert verify_standard(body.encode(), headers, EXAMPLE_SECRET, now=timestamp) == headers["webhook-id"]
    assert (
        verify_mailers(body.encode(), headers["Mailers-Signature"], EXAMPLE_SECRET, now=timestamp)
        == timestamp
    )
    signed = sign_delivery(headers["webhook-id"], timestamp, body.encode(), [EXAMPLE_SECRET])
    assert signed.items() <= headers.items()


def test_the_python_snippet_verifies_real_deliveries_and_refuses_bad_ones() -> None:
    namespace: dict[str, object] = {}
    exec(compile(_block("python"), "docs/webhooks.md", "exec"), namespace)
    verify_standard_doc, verify_mailers_doc = (
        namespace["verify_standard_webhook"],
        namespace["verify_mailers_signature"],
    )
    cases, expected = _cases()
    results = [
        [
            verify_standard_doc(secret, headers, body),
            verify_mailers_doc(secret, headers["mailers-signature"], body),
        ]  # type: ignore[operator]
        for secret, headers, body in cases
    ]
    assert results == [[outcome, outcome] for outcome in expected]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_node_snippet_verifies_real_deliveries_and_refuses_bad_ones(tmp_path: Path) -> None:
    script = tmp_path / "verify.js"
    script.write_text(_block("js") + NODE_DRIVER)
    cases, expected = _cases()
    payload = [
        {"secret": secret, "headers": headers, "body": base64.b64encode(body).decode()}
        for secret, headers, body in cases
    ]
    run = subprocess.run(
        ["node", str(script)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(run.stdout) == [[outcome, outcome] for outcome in expected]
