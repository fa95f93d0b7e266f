"""Run a provider simulator: `python -m providers.simulators PROVIDER --port N` (and `mailers simulate`).

PROVIDER is one of mailgun, sendgrid, resend, postmark, sns. Point a sending server's `base_url` at
`http://HOST:PORT` and its webhook settings at what the simulator prints (signing key / public key).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from providers.simulators.base import SIMULATOR, SimulatorOptions
from providers.simulators.sns import SNS, SnsOptions

PROVIDERS = ("mailgun", "sendgrid", "resend", "postmark", "sns")


def build_simulator(provider: str, **options: Any) -> web.Application:
    """The simulator app for `provider`; `options` are `SimulatorOptions` (or `SnsOptions`) fields."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown simulator {provider!r}; choose one of {', '.join(PROVIDERS)}")
    module = importlib.import_module(f"providers.simulators.{provider}")
    settings = SnsOptions(**options) if provider == "sns" else SimulatorOptions(**options)
    return module.create_app(settings)


def describe(provider: str, app: web.Application, base_url: str) -> str:
    if provider == "sns":
        sns = app[SNS]
        return f"sns simulator on {base_url}: topic {sns.options.topic_arn}, trust prefix {base_url}/"
    state = app[SIMULATOR]
    lines = [f"{provider} simulator on {base_url} (API key {state.options.api_key!r})"]
    if provider == "sendgrid":
        lines.append(f"  webhook public key: {getattr(state, 'public_key', '')}")
    elif state.webhook_secret:
        lines.append(f"  webhook signing secret: {state.webhook_secret}")
    return "\n".join(lines)


def run_simulator(provider: str, port: int, host: str = "127.0.0.1", **options: Any) -> None:
    """Serve one simulator until interrupted (blocking; for the CLI)."""
    app = build_simulator(provider, **options)
    print(describe(provider, app, f"http://{host}:{port}"), flush=True)
    web.run_app(app, host=host, port=port, print=None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's command-line options; `mailers simulate` declares the same through this."""
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-key", help="the key the simulator accepts (default sim-key)")
    parser.add_argument("--webhook-url", help="where to POST event webhooks")
    parser.add_argument("--webhook-secret", help="Mailgun signing key / Resend whsec_ secret")
    parser.add_argument("--rate-limit", type=float, help="send requests per second before 429")
    parser.add_argument("--rate-burst", type=int)
    parser.add_argument("--failure-probability", type=float, help="share of sends answered with a 5xx")
    parser.add_argument("--auth", choices=("ok", "reject"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--topic-arn", help="sns only: the TopicArn of the notifications")


def run_from_arguments(args: argparse.Namespace) -> None:
    """Check the options against the provider and serve it (raises SystemExit on a bad combination)."""
    values = dict(vars(args))
    provider, port, host = values.pop("provider"), values.pop("port"), values.pop("host")
    options = {key: value for key, value in values.items() if key in _OPTIONS and value is not None}
    if provider != "sns" and "topic_arn" in options:
        raise SystemExit("--topic-arn applies to the sns simulator only")
    if provider == "sns":
        unknown = set(options) - {"webhook_url", "topic_arn"}
        if unknown:
            raise SystemExit(
                f"the sns simulator takes only --webhook-url and --topic-arn, not {sorted(unknown)}"
            )
    run_simulator(provider, port, host, **options)


_OPTIONS = (
    "api_key",
    "webhook_url",
    "webhook_secret",
    "rate_limit",
    "rate_burst",
    "failure_probability",
    "auth",
    "seed",
    "topic_arn",
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m providers.simulators", description=__doc__)
    add_arguments(parser)
    run_from_arguments(parser.parse_args(argv))


if __name__ == "__main__":
    main()
