"""One module per resource family; each exposes `routes = RouteTable()` and is found here by name."""

from __future__ import annotations

import importlib
import pkgutil

from ingress.routing import RouteTable


def discover_route_tables() -> tuple[RouteTable, ...]:
    tables = []
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        table = getattr(importlib.import_module(f"{__name__}.{module.name}"), "routes", None)
        if isinstance(table, RouteTable):
            tables.append(table)
    return tuple(tables)
