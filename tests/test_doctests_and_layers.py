"""The layering of tripwire: one declared table of allowed imports per part, and no import cycles.

Every ``import`` of every module of ``detectors/``, ``breakers/`` and ``streams/`` counts, wherever
it stands: at the top, inside a function (lazy) or under ``TYPE_CHECKING`` (type-only). The
docstring examples of all three packages run through pytest's ``--doctest-modules``
(``pyproject.toml``), not here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("detectors", "breakers", "streams")

#: part → the parts (or single modules) of tripwire it may import. A module belongs to the longest
#: part that prefixes its name. docs/architecture.md draws this table.
ALLOWED: dict[str, set[str]] = {
    "detectors": set(),
    "breakers": {"detectors"},
    "streams": set(),  # streams/__init__.py: the version
    "streams.settings": {"streams.kafka.security", "streams.contract", "streams.engine.tuning"},
    "streams.contract": {"breakers", "detectors"},
    "streams.engine": {"breakers", "detectors", "streams.contract", "streams.settings"},
    "streams.kafka": {"streams.settings", "streams.ops.procutil"},
    "streams.emitter": {"streams.contract", "streams.kafka"},
    "streams.worker": {"breakers", "detectors", "streams", "streams.settings", "streams.contract", "streams.engine",
                       "streams.kafka", "streams.emitter"},
    "streams.ops": {"breakers", "detectors", "streams.settings", "streams.contract", "streams.engine",
                    "streams.kafka", "streams.emitter"},
    "streams.cli": {"breakers", "detectors", "streams", "streams.settings", "streams.contract", "streams.engine",
                    "streams.kafka", "streams.ops", "streams.worker"},
    "streams.console": {"streams.cli"},  # the console script: the CLI, or a one-line missing-extra hint
}

#: third-party packages that only some parts may import (everything else may use any dependency)
THIRD_PARTY_ONLY_IN: dict[str, set[str]] = {
    "faust": {"streams.worker", "streams.kafka"},
    "mode": {"streams.worker"},
    "aiokafka": {"streams.worker", "streams.kafka"},
    "prometheus_client": {"streams.worker"},
    "click": {"streams.cli"},
    "httpx": {"streams.worker", "streams.ops", "streams.cli"},
    "aiohttp": {"streams.worker"},
    "kafka": {"streams.kafka", "streams.ops", "streams.cli", "streams.emitter", "streams.worker"},
}

#: detectors/ is pure statistics: not even the standard library's network clients
DETECTORS_STDLIB_FORBIDDEN = {"http", "urllib", "socket", "ssl", "asyncio", "subprocess"}

#: violations and cycles still being removed by the #14 work in progress; each must disappear (the
#: test fails when one listed here is gone, so the list only shrinks)
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def part_of(module: str) -> str | None:
    """The part a tripwire module belongs to (the longest matching entry of ALLOWED), None outside.

    >>> part_of("streams.worker.http.routes"), part_of("breakers.scope"), part_of("faust.app")
    ('streams.worker', 'breakers', None)
    """
    best = None
    for part in ALLOWED:
        if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def imported_modules(module: str, path: Path) -> set[str]:
    """Absolute names of everything ``module`` imports, at any depth of its syntax tree."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            subs = {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES}
            out.update(subs if len(subs) == len(node.names) else subs | {target})
    return out


def allowed(src_part: str, target: str) -> bool:
    target_part = part_of(target)
    if target_part is None or target_part == src_part:
        return True
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[src_part])


def test_every_module_belongs_to_a_part() -> None:
    assert [m for m in MODULES if part_of(m) is None] == []


def test_imports_follow_the_table() -> None:
    found: set[tuple[str, str]] = set()
    for module, path in MODULES.items():
        src = part_of(module)
        assert src is not None
        for target in imported_modules(module, path):
            top = target.split(".")[0]
            if top in PACKAGES and not allowed(src, target):
                found.add((module, target))
            elif top in THIRD_PARTY_ONLY_IN and src not in THIRD_PARTY_ONLY_IN[top]:
                found.add((module, target))
            elif src == "detectors" and top in DETECTORS_STDLIB_FORBIDDEN:
                found.add((module, target))
    assert sorted(found - KNOWN_VIOLATIONS) == [], "imports outside the table: " + ", ".join(
        f"{m} → {t}" for m, t in sorted(found - KNOWN_VIOLATIONS))
    assert sorted(KNOWN_VIOLATIONS - found) == [], "fixed: remove these from KNOWN_VIOLATIONS"


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative).

    >>> sorted(sorted(c) for c in _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}))
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                    out.append(frozenset(component))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the tripwire modules it imports (a package import points at the package's __init__)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for target in imported_modules(module, path):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].add(target)
    return graph


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    """Type-only and lazy imports count: a shared type moves to the module both sides may import."""
    cycles = {c for c in _cycles(import_graph()) if all(m.split(".")[0] == package for m in c)}
    assert sorted(sorted(c) for c in cycles - KNOWN_CYCLES) == [], "import cycles: " + "; ".join(
        " ↔ ".join(sorted(c)) for c in cycles - KNOWN_CYCLES)
    assert sorted(sorted(c) for c in KNOWN_CYCLES - cycles if next(iter(c)).startswith(package)) == []
