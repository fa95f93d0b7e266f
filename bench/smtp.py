"""SMTP throughput: our adapter against a bare aiosmtplib client, both into a local aiosmtpd sink.

`python -m bench.smtp [--messages 3000] [--connections 16] [--runs 3]`

The sink (aiosmtpd's `Sink` handler, which accepts and drops) runs in its own process so it does not
share the client's GIL. The bare client sends pre-rendered bytes over `connections` reused
connections; our adapter renders MIME (and, in the DKIM row, signs) every message inside the timed
section and sends in `max_batch` batches, as the Dispatcher will. Prints a markdown table of the
median of `runs` runs, plus the per-message CPU cost of rendering and signing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiosmtplib

from providers.base import Sent
from providers.dkim import DkimSigner, generate_domain_key
from providers.egress import Egress
from providers.mime import render_mime
from providers.smtp import Adapter, Config
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from store.redis_server import free_port

HTML = (
    "<html><body><p>Hi Ana,</p><p>Welcome to <b>Acme</b>. "
    "<a href='https://acme.com/start'>Start here</a>.</p></body></html>"
)
TEXT = "Hi Ana,\n\nWelcome to Acme. Start here: https://acme.com/start\n"


def typical_message() -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        workspace="bench",
        from_=Address("hello@acme.com", "Acme"),
        to=[Address("ana@example.com", "Ana Müller")],
        subject="Welcome to Acme, Ana",
        html=HTML,
        text=TEXT,
        headers={"X-Entity-Ref-ID": "123"},
    )


def start_sink(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("aiosmtpd sink did not start")


async def bare_client(port: int, messages: list[OutboundMessage], connections: int) -> float:
    raws = [render_mime(m) for m in messages]  # pre-rendered: outside the timing, as the baseline is defined
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) for _ in range(connections)]
    await asyncio.gather(*(client.connect() for client in clients))
    queue = list(range(len(raws)))

    async def worker(client: aiosmtplib.SMTP) -> None:
        while queue:
            await client.sendmail("hello@acme.com", ["ana@example.com"], raws[queue.pop()])

    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(client.quit() for client in clients))
    return len(raws) / elapsed


async def our_adapter(
    port: int, messages: list[OutboundMessage], connections: int, dkim_key: bytes | None
) -> float:
    dkim = (
        {"dkim_domain": "acme.com", "dkim_selector": "bench", "dkim_private_key": dkim_key.decode()}
        if dkim_key
        else {}
    )
    config = Config(host="127.0.0.1", port=port, security="none", pool_size=connections, **dkim)
    adapter = Adapter(config, egress=Egress(allow_private_targets=True))  # the sink is on 127.0.0.1
    await adapter.send_batch(messages[:connections])  # open the pool, as a running Dispatcher has it open
    started = time.perf_counter()
    for start in range(0, len(messages), Adapter.max_batch):
        outcomes = await adapter.send_batch(messages[start : start + Adapter.max_batch])
        assert all(isinstance(o, Sent) for o in outcomes), outcomes[:3]
    elapsed = time.perf_counter() - started
    await adapter.close()
    return len(messages) / elapsed


def cpu_ms_per_message(operation: Callable[[], object], repeat: int = 2000) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        operation()
    return (time.perf_counter() - started) / repeat * 1000


def median_rates(contenders: dict[str, Callable[[], Awaitable[float]]], runs: int) -> dict[str, float]:
    """Runs interleaved (a, b, c, a, b, c, …) so load from elsewhere on the machine hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, run in contenders.items():
            rates[name].append(asyncio.run(run()))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    messages = [typical_message() for _ in range(args.messages)]
    private_pem, _ = generate_domain_key()
    signer = DkimSigner("acme.com", "bench", private_pem)
    raw = render_mime(messages[0])
    render_ms = cpu_ms_per_message(lambda: render_mime(messages[0]))
    sign_ms = cpu_ms_per_message(lambda: signer.sign(raw), repeat=500)

    port = free_port()
    sink = start_sink(port)
    try:
        rates = median_rates(
            {
                "bare aiosmtplib, pre-rendered bytes": lambda: bare_client(port, messages, args.connections),
                "providers.smtp Adapter (renders MIME)": lambda: our_adapter(
                    port, messages, args.connections, None
                ),
                "providers.smtp Adapter + DKIM signing": lambda: our_adapter(
                    port, messages, args.connections, private_pem
                ),
            },
            args.runs,
        )
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    print(
        f"SMTP into a local aiosmtpd sink: {args.messages} messages, {args.connections} connections, "
        f"median of {args.runs} runs\n"
    )
    print("| client | msgs/s | vs bare |")
    print("|---|---:|---:|")
    bare = next(iter(rates.values()))
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / bare:.0%} |")
    print(
        f"\nrender_mime (html+text, ~{len(raw)} bytes): {render_ms:.3f} ms/message; "
        f"DKIM sign: {sign_ms:.3f} ms/message"
    )


if __name__ == "__main__":
    main()
