"""Issue #11's target: with one attacker sending the worst bodies at full speed, a normal client's
`/v1/send` p95 stays <= 50 ms (bench/attack.py drives both; `python -m bench --phases attack` prints the
same figures beside the unattacked ones).

The app runs without Ray (no gateway): nothing here needs an actor, and dispatchers working on the
normal client's messages would only add noise. The attacker is its own process with its own key in
another workspace, as a tenant would be.
"""

from __future__ import annotations

import uuid

from bench.attack import NORMAL_REQUESTS, attacked, percentile
from ingress.app import create_app
from tests.conftest import make_settings

P95_TARGET_MS = 50.0


async def _sandbox(client, headers) -> None:
    body = {"name": "sandbox", "provider": "sandbox"}
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()


async def test_a_normal_client_stays_under_50ms_p95_while_an_attacker_sends_the_worst_inputs(
    aiohttp_client, tmp_path, redis_url, redis, make_key
):
    app = create_app(make_settings(tmp_path, redis_url), redis_url=redis_url, gateway=None)
    client = await aiohttp_client(app)
    normal = await make_key(["send", "write:settings"])
    attacker = await make_key(["send", "write:settings"], workspace=f"evil-{uuid.uuid4().hex[:8]}")
    for headers in (normal, attacker):
        await _sandbox(client, headers)
    base = str(client.make_url("")).rstrip("/")

    latencies, answers = await attacked(base, normal, attacker["Authorization"])

    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(f"normal client p50 {p50:.1f} ms, p95 {p95:.1f} ms; attacker answered {answers}")
    assert len(latencies) == NORMAL_REQUESTS
    assert answers.get("202", 0) >= 2, f"the attacker never got going: {answers}"
    assert p95 <= P95_TARGET_MS, f"normal client p95 {p95:.1f} ms with the attacker ({answers})"
