"""`mailers suppressions global add|list|remove`: the operator's hand on the global suppression list.

Global entries stop mail to an address for every workspace of the installation, so no workspace key
may touch them (`/v1/suppressions` answers 403 for `scope=global`); whoever runs this command on the
service's host (its Redis and settings) is the operator. Writes go through `SuppressionStore`, which
publishes the change, so every SuppressionShard follows within a moment.
"""

from __future__ import annotations

import argparse
import sys
from typing import get_args

import redis.asyncio as aioredis

from ingress.runtime import with_redis
from schemas.settings import Settings
from schemas.suppressions import Reason, SuppressionEntry
from store.suppressions import GLOBAL, SuppressionStore, normalise_entry

_LIST_PAGE = 100


def add_arguments(commands) -> None:
    group = commands.add_parser("suppressions", help="operator-only suppressions").add_subparsers(
        required=True
    )
    global_ = group.add_parser("global", help="suppressions that apply to every workspace").add_subparsers(
        required=True
    )
    add = global_.add_parser("add", help="suppress addresses in every workspace")
    add.add_argument("emails", nargs="+")
    add.add_argument("--reason", default="manual", choices=get_args(Reason))
    add.set_defaults(run=_add)
    listing = global_.add_parser("list", help="print the global suppressions, newest first")
    listing.set_defaults(run=_list)
    remove = global_.add_parser("remove", help="lift global suppressions of addresses")
    remove.add_argument("emails", nargs="+")
    remove.set_defaults(run=_remove)


def _entries(emails: list[str], reason: str) -> list[SuppressionEntry] | None:
    try:
        return [
            normalise_entry(SuppressionEntry(email=e, scope="global", reason=reason, source="operator"))  # type: ignore[arg-type]
            for e in emails
        ]
    except ValueError as exc:
        print(f"mailers: {exc}", file=sys.stderr)
        return None


def _add(settings: Settings, args: argparse.Namespace) -> int:
    entries = _entries(args.emails, args.reason)
    if entries is None:
        return 2

    async def run(redis: aioredis.Redis) -> int:
        created = await SuppressionStore(redis).add(GLOBAL, entries)
        for entry, new in zip(entries, created, strict=True):
            print(f"{'added' if new else 'exists'}: {entry.email}")
        return 0

    return with_redis(settings, run)


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    async def run(redis: aioredis.Redis) -> int:
        try:
            removed = await SuppressionStore(redis).remove(GLOBAL, args.emails, "global")
        except ValueError as exc:
            print(f"mailers: {exc}", file=sys.stderr)
            return 2
        for email, gone in zip(args.emails, removed, strict=True):
            print(f"{'removed' if gone else 'not suppressed'}: {email}")
        return 0

    return with_redis(settings, run)


def _list(settings: Settings, args: argparse.Namespace) -> int:
    async def run(redis: aioredis.Redis) -> int:
        store, after = SuppressionStore(redis), None
        while True:
            records, more, after = await store.page(GLOBAL, limit=_LIST_PAGE, after=after, scope="global")
            for record in records:
                print(f"{record.email}\t{record.reason}\t{record.source}")
            if not more:
                return 0

    return with_redis(settings, run)
