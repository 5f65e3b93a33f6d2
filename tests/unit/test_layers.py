"""The tree's promises, checked on every import statement of `streams/`.

The layout only helps a reader if it is true: the pipeline never reaches for dev-only or CLI code,
the exactness rules stay pure (no client library can sneak I/O into them), and the roles form
layers, not a tangle. A new import that breaks one of these fails here, naming the file.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "streams"
#: The packages a running pipeline (worker, producer library, API, dashboard, operator jobs) loads.
PIPELINE = ("charge", "rules", "sink", "kafka", "worker", "producer", "ops", "config", "dashboard", "api")
#: Top-level helper modules every role may use.
SHARED = ("errors", "logs", "redaction", "output_safety", "crashpoints")
#: Libraries that do I/O or drive a terminal: none of them belongs in a pure rule.
IO_LIBRARIES = frozenset(
    {"aiokafka", "asyncpg", "faust", "aiohttp", "fastapi", "uvicorn", "click", "rich", "socket", "subprocess"}
)


def _role(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = ROOT.parent.joinpath(*node.module.split("."))
            if node.module.startswith("streams") and package.is_dir():  # from a package: its modules
                yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, node.module


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def _streams_role(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "streams" and len(parts) > 1 else None


def test_every_module_is_found() -> None:
    roles = {_role(p) for p in _modules()}
    assert set(PIPELINE) <= roles and {"cli", "embedded", "testing"} <= roles


@pytest.mark.parametrize("forbidden", ["cli", "embedded", "testing"])
def test_the_pipeline_never_imports_dev_cli_or_test_code(forbidden: str) -> None:
    found = [
        f"{p.relative_to(ROOT)}:{line} imports {module}"
        for p in _modules()
        if _role(p) in PIPELINE or p.stem in SHARED
        for line, module in _imports(p)
        if _streams_role(module) == forbidden
    ]
    assert found == []


@pytest.mark.parametrize("role", ["charge", "rules"])
def test_charges_and_rules_are_pure(role: str) -> None:
    found = [
        f"{p.relative_to(ROOT)}:{line} imports {module}"
        for p in _modules()
        if _role(p) == role
        for line, module in _imports(p)
        if module.split(".")[0] in IO_LIBRARIES
        or _streams_role(module) not in (None, "charge", "rules", "errors")
    ]
    assert found == []


def test_click_and_rich_stay_in_the_cli() -> None:
    found = [
        f"{p.relative_to(ROOT)}:{line} imports {module}"
        for p in _modules()
        if _role(p) != "cli"
        for line, module in _imports(p)
        if module.split(".")[0] in ("click", "rich")
    ]
    assert found == []


def test_roles_form_layers_without_cycles() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for p in _modules():
        for _, module in _imports(p):
            target = _streams_role(module)
            if target is not None and target != _role(p):
                graph[_role(p)].add(target)
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import cycle between roles: {' -> '.join((*trail, node))}"
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, (*trail, node))
        done.add(node)

    for node in sorted(graph):
        visit(node, ())
