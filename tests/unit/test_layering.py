"""The layers import one way: ``schemas`` → ``streams``/``ingest``/``query_gateway`` → ``infra`` → entry points.

A module may import its own layer and the layers below it, never one above. The one
entry point that still lives inside a lower package, ``streams/cli.py`` (the ``aichat``
command, which starts workers, the gateway and the stack), is named here; anything else
that points up fails this test with the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the rank of each package: an import may only go to the same rank or lower
LAYERS = {"schemas": 0, "streams": 1, "ingest": 1, "query_gateway": 1, "infra": 2}
#: entry points inside a lower package: they sit on top of everything
ENTRY_POINTS = {"streams/cli.py"}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(package: str, relative_path: str, source: str) -> list[str]:
    """The imports of one module that point to a higher layer than its own."""
    if relative_path in ENTRY_POINTS:
        return []
    rank = LAYERS[package]
    return [f"{relative_path}:{line} imports {target} (layer {LAYERS[target]} above {package}, layer {rank})"
            for line, target in imported_packages(source)
            if target in LAYERS and LAYERS[target] > rank]


def test_no_import_points_up() -> None:
    problems = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            problems += upward_imports(package, relative, path.read_text(encoding="utf-8"))
    assert problems == []


@pytest.mark.parametrize(("package", "source", "upward"), [
    ("schemas", "from streams.config import WorkerSettings\n", True),
    ("streams", "import infra.stack\n", True),
    ("query_gateway", "from infra.config import StackSettings\n", True),
    ("streams", "from schemas.events import QueryEvent\nfrom streams.errors import ConfigError\n", False),
    ("ingest", "from query_gateway.protocol import QueryFrame\n", False),  # same layer
    ("infra", "from streams.config import WorkerSettings\n", False),
    ("streams", "from .errors import ConfigError\n", False),  # relative: its own package
])
def test_the_check_sees_an_arrow_up(package: str, source: str, upward: bool) -> None:
    assert bool(upward_imports(package, f"{package}/example.py", source)) is upward


def test_entry_points_are_the_named_exception() -> None:
    assert upward_imports("streams", "streams/cli.py", "from infra import up\n") == []
