"""Issue #11: unauthenticated requests filled the audit log without limit. They are sampled per client
address, and what is left out is counted in one summary entry per address (docs/audit.md)."""

from __future__ import annotations

from ingress.audit import AUDIT_CAPTURE, UNAUTHENTICATED, AuditCapture, RefusedRequestSampler, Suppressed
from tests.audit.conftest import stream_entries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unauthenticated_requests_fill_the_audit_log_without_limit(app_client, redis):
    """The finding: 1,000 requests without a valid key used to add 1,000 entries (kept forever)."""
    clock = Clock()
    capture = AuditCapture(clock=clock)
    client = await app_client(app_hook=lambda app: app.__setitem__(AUDIT_CAPTURE, capture))
    for _ in range(1000):
        assert (await client.get("/v1/audit-logs")).status == 401
    entries = await stream_entries(redis)
    assert len(entries) == 10  # the per-address burst; the other 990 are only counted
    assert all(e.workspace == UNAUTHENTICATED and e.action == "GET /v1/audit-logs" for e in entries)

    clock.now += 60  # the summary is due: the next request writes it, then its own entry
    assert (
        await client.get("/v1/audit-logs", headers={"Authorization": "Bearer mk_unknown12345"})
    ).status == 401
    summary, entry = (await stream_entries(redis))[10:]
    assert summary.action == "990 refused requests from 127.0.0.1 suppressed"
    assert (summary.workspace, summary.status, summary.ip) == (UNAUTHENTICATED, 401, "127.0.0.1")
    assert entry.key_prefix == "mk_unknown1"


async def test_refused_keys_of_a_workspace_are_not_sampled(app_client, make_key, redis, workspace):
    """A revoked or under-scoped key names its workspace: every one of its refusals is recorded."""
    sender = await make_key(["send"])
    client = await app_client(
        app_hook=lambda app: app.__setitem__(AUDIT_CAPTURE, AuditCapture(clock=Clock()))
    )
    for _ in range(30):
        assert (await client.get("/v1/audit-logs", headers=sender)).status == 403
    entries = await stream_entries(redis)
    assert len(entries) == 30 and {e.workspace for e in entries} == {workspace}


def test_each_address_gets_a_burst_then_its_rate():
    sampler = RefusedRequestSampler(per_client_rate=1.0, per_client_burst=3)
    admitted = [sampler.admit("10.0.0.1", 401, 0.0)[0] for _ in range(5)]
    assert admitted == [True, True, True, False, False]
    assert sampler.admit("10.0.0.2", 401, 0.0)[0]  # another address has its own bucket
    ok, summaries = sampler.admit("10.0.0.1", 403, 1.0)  # one token back after a second
    assert ok and summaries == [Suppressed("10.0.0.1", 2, 401)]


def test_many_addresses_share_one_total_limit():
    sampler = RefusedRequestSampler(per_client_burst=5, total_rate=1.0, total_burst=20)
    admitted = sum(sampler.admit(f"10.0.{i // 250}.{i % 250}", 401, 0.0)[0] for i in range(1000))
    assert admitted == 20


def test_a_run_is_summarised_after_a_while_even_if_the_address_stays_away():
    sampler = RefusedRequestSampler(per_client_burst=1, summary_after=60.0)
    for _ in range(4):
        sampler.admit("10.0.0.1", 401, 0.0)
    assert sampler.admit("10.0.0.9", 401, 59.0) == (True, [])
    assert sampler.admit("10.0.0.8", 401, 60.0) == (True, [Suppressed("10.0.0.1", 3, 401)])


def test_the_table_of_addresses_is_bounded_and_evictions_are_summarised():
    sampler = RefusedRequestSampler(per_client_burst=1, max_clients=2)
    sampler.admit("a", 401, 0.0)
    sampler.admit("a", 401, 0.0)  # suppressed
    sampler.admit("b", 401, 0.0)
    assert sampler.admit("c", 401, 0.0) == (True, [Suppressed("a", 1, 401)])
    assert len(sampler._clients) == 2
