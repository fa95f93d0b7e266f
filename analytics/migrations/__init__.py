"""Numbered DDL for each backend: `<backend>/NNNN_name.sql`, applied in order, recorded in schema_migrations.

Statements in a file are separated by a line ending in `;`. Each statement must be safe to run twice
(IF NOT EXISTS), because ClickHouse has no transactions to make a half-applied file atomic.
"""

from __future__ import annotations

from importlib import resources

import msgspec


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    statements: tuple[str, ...]


def _statements(text: str) -> tuple[str, ...]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    parts = "\n".join(lines).split(";\n")
    return tuple(part.strip().rstrip(";").strip() for part in parts if part.strip())


def load(backend: str) -> list[Migration]:
    """The migrations of `backend` ("duckdb" or "clickhouse"), lowest version first."""
    found = []
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        stem, _, suffix = entry.name.rpartition(".")
        if suffix != "sql":
            continue
        version, _, name = stem.partition("_")
        found.append(Migration(int(version), name, _statements(entry.read_text(encoding="utf-8"))))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise RuntimeError(f"two {backend} migrations share a version number")
    return found
