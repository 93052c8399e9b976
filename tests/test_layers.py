"""The package's layers: no import cycle, no import from a lower layer to a higher one, a light core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
# Each layer may import its own and those after it in this list, never those before it.
LAYERS = ("ascrm.cli", "ascrm.tools", "ascrm.service", "ascrm.core")
HEAVY = ("starlette", "prometheus_client", "watchfiles", "cerberus", "uvicorn", "redis", "aiohttp")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module) -> set[str]:
    """The modules imported when the module runs: top level and class bodies, not functions, not
    `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _runtime_imports(ast.parse(path.read_text())):
            if target not in modules:
                continue
            edges.add(target)
            parts = target.split(".")
            for package in (".".join(parts[:i]) for i in range(1, len(parts))):
                if not name.startswith(package + "."):  # importing into a package runs its __init__ first
                    edges.add(package)
        graph[name] = edges - {name}
    return graph


def _layer(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def test_the_walk_sees_the_package() -> None:
    graph = _graph()
    assert "ascrm.core.protocol" in graph
    assert "ascrm.core.protocol" in graph["ascrm.core.engine"] or any(
        "ascrm.core.protocol" in graph[m] for m in graph["ascrm.core.engine"]
    )


def test_no_import_cycle() -> None:
    graph = _graph()
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = []
    for module, targets in _graph().items():
        rank = _layer(module)
        for target in targets:
            target_rank = _layer(target)
            if rank is not None and target_rank is not None and target_rank < rank:
                upward.append(f"{module} imports {target}")
            if rank is None and target_rank is not None and module not in ("ascrm", "ascrm.__main__"):
                upward.append(f"{module} (below every layer: errors) imports {target}")
    assert upward == []


@pytest.mark.parametrize(
    "module", ["ascrm", "ascrm.core.protocol", "ascrm.core.engine", "ascrm.core.answering", "ascrm.cli"]
)
def test_the_core_loads_no_web_framework(module: str) -> None:
    code = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


TESTS = Path(__file__).resolve().parent


def _imported_test_modules(source: str) -> set[str]:
    """The modules of tests/ other than tests/support (conftest included) that a test module imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from .test_x import y, from . import test_x
                module = f"tests.{module}" if module else "tests"
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]

        else:
            continue
        for name in names:
            parts = name.split(".")
            bare = parts[0].startswith("test_") or parts[0] == "conftest"  # `import test_x`, tests/ on the path
            if bare or (parts[0] == "tests" and len(parts) > 1 and parts[1] != "support"):
                found.add(name)
    return found


def test_the_import_check_sees_every_spelling() -> None:
    source = "from tests.test_api import x\nimport test_cli\nfrom .conftest import y\nfrom . import test_tls\n"
    assert _imported_test_modules(source) == {
        "tests.test_api",
        "tests.test_api.x",
        "test_cli",
        "tests.conftest",
        "tests.conftest.y",
        "tests.test_tls",
    }
    assert _imported_test_modules("from tests.support.server import Server\nfrom tests.support import tls\n") == set()


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support: no test module imports another, nor conftest."""
    offenders = {
        path.name: sorted(names)
        for path in sorted(TESTS.glob("*.py"))
        if (names := _imported_test_modules(path.read_text()))
    }
    assert offenders == {}
