"""The package's import graph: data flows one way, so ``splitnet/`` has no import cycle, and no
module reaches into another's private (``_name``) names.

Every ``import`` statement counts, at module level or inside a function (an import inside a
function must not hide a cycle). Checked against an edge we know exists so the walk itself is
tested, and against a cycle planted in a copy of the package.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "splitnet"


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``a.b`` names, ``root.name`` first)."""
    base = root.name
    mods = {
        p: ".".join((base, *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for p in root.rglob("*.py")
    }
    known = set(mods.values())
    graph: dict[str, set[str]] = {}
    for path, mod in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(parts + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in known and t != mod}
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first = last), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_in_splitnet():
    graph = import_graph(PACKAGE)
    assert "splitnet.sgd" in graph["splitnet.experiment"]  # the walk sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_finds_a_planted_cycle(tmp_path):
    copy = tmp_path / "splitnet"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # sgd is a leaf of the pipeline; make it import the experiment, inside a function
    (copy / "sgd.py").write_text(
        (copy / "sgd.py").read_text() + "\n\ndef _late():\n    from . import experiment\n"
    )
    cycle = find_cycle(import_graph(copy))
    assert cycle is not None and "splitnet.sgd" in cycle and "splitnet.experiment" in cycle


FOUNDATIONS = {"splitnet.config", "splitnet.partition", "splitnet.seeds", "splitnet.validation"}


@pytest.mark.parametrize("leaf", sorted(FOUNDATIONS))
def test_the_foundations_import_nothing_downstream(leaf):
    graph = import_graph(PACKAGE)
    assert graph[leaf] <= FOUNDATIONS, graph[leaf]


def private_uses(root: Path) -> list[str]:
    """Every ``from splitnet.X import _name`` and ``X._name`` (X an imported splitnet module)
    in the .py files under ``root``: one module reaching into another's private names."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules: set[str] = set()  # local names bound to splitnet modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                ours = node.level > 0 or (node.module or "").startswith("splitnet")
                for a in node.names if ours else ():
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{path}:{node.lineno} imports {a.name}")
                    else:
                        modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("splitnet"):
                        modules.add(a.asname or a.name.split(".")[0])
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{path}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("folder", ["splitnet", "experiments", "benchmarks"])
def test_no_module_uses_another_modules_private_names(folder):
    assert private_uses(REPO / folder) == []


def test_the_private_walk_finds_a_planted_use(tmp_path):
    (tmp_path / "a.py").write_text("from splitnet.config import _x\nfrom splitnet import race\n")
    (tmp_path / "b.py").write_text("from splitnet import race as r\nr._hash({})\n")
    found = private_uses(tmp_path)
    assert len(found) == 2 and "imports _x" in found[0] and "uses r._hash" in found[1]


def test_modules_and_study_scripts_stay_small():
    """No module of the package above 450 lines; a study script holds only its grid, its calls
    into the library and its figure layout: at most 250 lines."""
    big = [p for p in PACKAGE.rglob("*.py") if len(p.read_text().splitlines()) > 450]
    assert big == []
    studies = [p for p in (REPO / "experiments").glob("*/run.py")]
    assert studies and [p for p in studies if len(p.read_text().splitlines()) > 250] == []
