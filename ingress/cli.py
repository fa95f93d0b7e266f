"""The `mailers` command: serve, workspaces, keys, migrate, simulate, import, audit, secrets, global
suppressions."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import uvloop

from ingress.operator_suppressions import add_arguments as add_operator_suppressions
from ingress.runtime import with_redis
from schemas.api_keys import SCOPES
from schemas.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from security.audit_checkpoint import AuditCheckpoint


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"mailers: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.run(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailers", description="Self-hosted email router")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service (embedded Redis, Ray and DuckDB by default)")
    serve.set_defaults(run=_serve)

    workspaces = commands.add_parser("workspaces", help="manage workspaces").add_subparsers(required=True)
    create_ws = workspaces.add_parser("create", help="create a workspace")
    create_ws.add_argument("name")
    create_ws.set_defaults(run=_create_workspace)

    migrate = commands.add_parser("migrate", help="apply the analytics store's pending migrations")
    migrate.set_defaults(run=_migrate)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(required=True)
    create_key = keys.add_parser("create", help="create an API key and print its secret once")
    create_key.add_argument("--workspace", required=True)
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--scopes", required=True, help="comma-separated, e.g. send,read:messages")
    create_key.add_argument("--domains", default="", help="comma-separated sending domains the key may use")
    create_key.add_argument("--json", action="store_true", help="print the key as JSON")
    create_key.set_defaults(run=_create_key)
    _add_simulate(commands)
    _add_import(commands)
    _add_campaigns(commands)
    _add_audit(commands)
    _add_secrets(commands)
    add_operator_suppressions(commands)
    return parser


def _add_secrets(commands) -> None:
    secrets = commands.add_parser("secrets", help="the master secret").add_subparsers(required=True)
    reencrypt = secrets.add_parser(
        "reencrypt",
        help="re-seal every sealed value in Redis under MAILERS_SECRET_KEY (after a rotation); "
        "safe to interrupt and run again",
    )
    reencrypt.set_defaults(run=_reencrypt)


def _add_import(commands) -> None:
    importing = commands.add_parser("import", help="import a CSV file into a list, with a progress bar")
    importing.add_argument("list_id", metavar="LIST_ID")
    importing.add_argument("file", metavar="FILE.csv")
    importing.add_argument("--url", help="the API's base URL (default: MAILERS_PUBLIC_URL or host:port)")
    importing.add_argument("--key", help="an API key with write:lists (default: MAILERS_API_KEY)")
    importing.set_defaults(run=_import)


def _import(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from ingress.import_cli import ImportFailed, run_import, summary

    key = args.key or settings.api_key
    if not key:
        print("mailers import: give --key or set MAILERS_API_KEY", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    try:
        state = asyncio.run(
            run_import(args.url or settings.base_url, key, args.list_id, Path(args.file), console=console)
        )
    except (ImportFailed, OSError) as exc:
        print(f"mailers import: {exc}", file=sys.stderr)
        return 1
    print(summary(state))
    return 0 if state["status"] == "completed" else 1


def _add_campaigns(commands) -> None:
    campaigns = commands.add_parser("campaigns", help="campaigns").add_subparsers(required=True)
    watching = campaigns.add_parser("watch", help="follow a campaign with a live progress bar")
    watching.add_argument("campaign_id", metavar="ID")
    watching.add_argument("--url", help="the API's base URL (default: MAILERS_PUBLIC_URL or host:port)")
    watching.add_argument("--key", help="an API key with read:campaigns (default: MAILERS_API_KEY)")
    watching.add_argument("--every", type=float, default=1.0, help="seconds between polls (default 1)")
    watching.set_defaults(run=_watch_campaign)


def _watch_campaign(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from ingress.campaign_cli import WatchFailed, describe, watch

    key = args.key or settings.api_key
    if not key:
        print("mailers campaigns watch: give --key or set MAILERS_API_KEY", file=sys.stderr)
        return 2
    try:
        state = asyncio.run(
            watch(
                args.url or settings.base_url,
                key,
                args.campaign_id,
                console=Console(stderr=True),
                poll_seconds=args.every,
            )
        )
    except (WatchFailed, OSError) as exc:
        print(f"mailers campaigns watch: {exc}", file=sys.stderr)
        return 1
    print(f"campaign {state['id']}: {describe(state)}")
    return 0 if state["status"] == "sent" else 1


def _add_audit(commands) -> None:
    audit = commands.add_parser("audit", help="the signed audit log").add_subparsers(required=True)
    verify = audit.add_parser(
        "verify", help="check a workspace's audit chain and signatures in the analytics store"
    )
    verify.add_argument("--workspace", required=True)
    verify.add_argument(
        "--checkpoint",
        metavar="URL",
        help="compare with the latest checkpoint in file:///path.jsonl or s3://bucket/prefix "
        "instead of the one in Redis",
    )
    verify.set_defaults(run=_verify_audit)


def _add_simulate(commands) -> None:
    # The one command that reaches into providers/: the simulators stand in for the providers offline.
    from providers.simulators.__main__ import add_arguments

    simulate = commands.add_parser(
        "simulate", help="run a provider simulator (its API, rate limits, webhooks)"
    )
    add_arguments(simulate)
    simulate.set_defaults(run=_simulate)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from providers.simulators.__main__ import run_from_arguments

    try:
        run_from_arguments(args)
    except SystemExit as exc:
        print(f"mailers: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from ingress.runtime import serve
    from ingress.startup import StartupError

    try:
        # uvloop (libuv) for the serving loop: issue #14's py-spy of the ingress at 500 req/s put about a
        # third of its CPU in asyncio's own loop, transports and socket writes; libuv does that work in C.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(settings))
    except StartupError as exc:
        print(f"mailers: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from analytics.errors import StoreUnavailable
    from analytics.store import analytics_url, open_store

    async def run() -> int:
        store = open_store(
            settings.analytics_url, settings.data_dir, duckdb_memory_mb=settings.duckdb_memory_mb
        )
        try:
            applied = await store.migrate()
        except StoreUnavailable as exc:
            print(
                f"mailers: the analytics store cannot be opened ({exc.__cause__ or exc}); "
                "in embedded mode stop `mailers serve` first",
                file=sys.stderr,
            )
            return 1
        finally:
            await store.close()
        url = analytics_url(settings.analytics_url, settings.data_dir)
        print(f"{url.partition('://')[0]}: schema at migrations {applied}")
        return 0

    return asyncio.run(run())


def _create_workspace(settings: Settings, args: argparse.Namespace) -> int:
    from store.workspaces import InvalidWorkspaceId, WorkspaceStore

    async def run(redis: aioredis.Redis) -> int:
        try:
            _, created = await WorkspaceStore(redis).create(args.name)
        except InvalidWorkspaceId as exc:
            print(f"mailers: {exc}", file=sys.stderr)
            return 2
        print(f"{'created' if created else 'exists'}: {args.name}")
        return 0

    return with_redis(settings, run)


def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    from ingress.routes.api_keys import with_secret
    from store.api_keys import ApiKeyStore, generate_secret, new_record
    from store.workspaces import WorkspaceStore

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        print(f"mailers: unknown scopes {unknown}; choose from {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]

    async def run(redis: aioredis.Redis) -> int:
        if await WorkspaceStore(redis).get(args.workspace) is None:
            print(
                f"mailers: no workspace {args.workspace!r} (create it with `mailers workspaces create`)",
                file=sys.stderr,
            )
            return 2
        secret = generate_secret()
        record = new_record(args.workspace, args.name, scopes, secret=secret, domains=domains)
        await ApiKeyStore(redis).create(record)
        if args.json:
            import msgspec

            print(json.dumps(msgspec.to_builtins(with_secret(record, secret))))
        else:
            print(f"{record.id} {secret}")
        return 0

    return with_redis(settings, run)


def _verify_audit(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 with `ok: N entries …`, 1 naming the first broken entry, a truncation or a rejected
    checkpoint, 2 when the checkpoint location cannot be read (docs/audit.md)."""
    from analytics.audit import AuditStore, audit_store_url
    from ingress.runtime import with_secret_key
    from security.audit_checkpoint import signature_problem
    from store.audit_checkpoint_sinks import CheckpointSinkError
    from store.audit_log import all_verifying_keys

    settings = with_secret_key(settings)

    async def run(redis: aioredis.Redis) -> int:
        keys = await all_verifying_keys(settings, redis)
        try:
            checkpoint = await _latest_checkpoint(redis, args.workspace, args.checkpoint)
        except (CheckpointSinkError, ValueError) as exc:
            print(f"mailers: cannot read the checkpoint: {exc}", file=sys.stderr)
            return 2
        if checkpoint is not None:
            problem = signature_problem(checkpoint, keys)
            if checkpoint.workspace != args.workspace:
                problem = f"it is a checkpoint of workspace {checkpoint.workspace!r}"
            if problem is not None:
                print(f"checkpoint of seq {checkpoint.seq} ({checkpoint.time}) rejected: {problem}")
                return 1
        url = audit_store_url(settings.analytics_url, settings.data_dir)
        store = await AuditStore.open(url, migrate=False, read_only=True)
        try:
            result, count = await store.verify(args.workspace, list(keys.values()), checkpoint=checkpoint)
        finally:
            await store.close()
        if not result.ok:
            named = f" (id {result.first_broken_id})" if result.first_broken_id else ""
            print(f"broken at seq {result.first_broken_seq}{named}: {result.reason}")
            return 1
        if checkpoint is None:
            print(f"ok: {count} entries (no checkpoint to compare with: a cut-off end would go unnoticed)")
        else:
            print(f"ok: {count} entries, up to the checkpoint of seq {checkpoint.seq} ({checkpoint.time})")
        return 0

    return with_redis(settings, run)


async def _latest_checkpoint(
    redis: aioredis.Redis, workspace: str, location: str | None
) -> AuditCheckpoint | None:
    """The newest checkpoint of `workspace`: from `location` (file or S3) if given, else from Redis."""
    from store.audit_checkpoint_sinks import open_checkpoint_source
    from store.audit_checkpoints import CheckpointLog

    if location is None:
        return await CheckpointLog(redis).latest(workspace)
    source = open_checkpoint_source(location)
    return await source.latest(workspace)


def _reencrypt(settings: Settings, args: argparse.Namespace) -> int:
    """Record the audit log's verifying keys, then re-seal (docs/operations.md, rotating the secret)."""
    from ingress.runtime import with_secret_key
    from security.audit_chain import audit_signer
    from store.audit_log import record_verifying_keys
    from store.reseal import reseal_all

    settings = with_secret_key(settings)
    masters = [k for k in (settings.secret_key, *settings.secret_keys_old) if k]

    async def run(redis: aioredis.Redis) -> int:
        kept = await record_verifying_keys(redis, [audit_signer(m).public_key_pem() for m in masters])
        report = await reseal_all(redis, settings)
        counts = " ".join(f"{kind}={n}" for kind, n in sorted(report.resealed.items())) or "none"
        print(f"audit verifying keys kept: {' '.join(kept)}")
        print(f"re-sealed: {counts}")
        if report.raced:
            print(f"{report.raced} records changed during the run: run the command again")
        for key in report.unreadable:
            print(f"cannot open (sealed under a master key not configured): {key}", file=sys.stderr)
        return 1 if report.unreadable else 0

    return with_redis(settings, run)


if __name__ == "__main__":
    raise SystemExit(main())
