"""The package structure as a contract: no import cycles between our modules.

The layers and "only actors imports ray" are import-linter contracts (pyproject.toml, run by `make lint`);
cycles are checked here over the same import graph (grimp, import-linter's own), function-local imports
included, because a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import grimp

PACKAGES = ("schemas", "security", "store", "providers", "content", "analytics", "actors", "ingress")


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm, iterative: every set of modules that import each other round a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # A package's __init__ importing its own submodules is not a cycle worth naming; only module cycles are.
    cycles = [sorted(c) for c in _strongly_connected(graph)]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert [sorted(c) for c in _strongly_connected(graph)] == [["a.x", "a.y"]]


# What the ingress may import from actors/: the gateway, and the Ray-free parts it shares with the runners.
# Every actor package added later is covered without touching this list (import-linter's "forbidden"
# contract in pyproject.toml has to name each one).
INGRESS_MAY_USE = ("actors.gateway", "actors.policies", "actors.priority", "actors.outbound")


def _ingress_reaches(graph: grimp.ImportGraph) -> set[str]:
    return {
        imported
        for importer in graph.modules
        if importer == "ingress" or importer.startswith("ingress.")
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.startswith("actors.")
        and not any(imported == allowed or imported.startswith(allowed + ".") for allowed in INGRESS_MAY_USE)
    }


def test_the_ingress_reaches_actors_only_through_the_gateway_and_shared_pure_parts() -> None:
    assert _ingress_reaches(grimp.build_graph(*PACKAGES, cache_dir=None)) == set()


def test_the_ingress_check_finds_a_direct_actor_import() -> None:
    graph = grimp.ImportGraph()
    for module in ("ingress.routes.x", "actors.gateway", "actors.campaigns.body", "actors.outbound.service"):
        graph.add_module(module)
    graph.add_import(importer="ingress.routes.x", imported="actors.gateway")
    graph.add_import(importer="ingress.routes.x", imported="actors.outbound.service")
    graph.add_import(importer="ingress.routes.x", imported="actors.campaigns.body")
    assert _ingress_reaches(graph) == {"actors.campaigns.body"}
