"""The layer contract of docs/architecture.md: imports flow downward only (import-linter's layers contract
in pyproject.toml, run as `lint-imports`), and no two modules of gendm import each other, directly or
through others (grimp's import graph, imports inside functions included, `if TYPE_CHECKING:` imports
excluded). A throwaway package shows that both checks fail on what they are meant to catch."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path, path: Path | None = None) -> tuple[bool, str]:
    """Run `lint-imports` on the contracts of ``config`` (``path`` prepended to the import path):
    (every contract kept, the report)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    cmd = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    run = subprocess.run(
        [sys.executable, "-c", cmd, "--no-cache", "--no-logo", str(config)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.returncode == 0, run.stdout + run.stderr


def import_cycles(package: str) -> list[str]:
    """Every import cycle among the modules of ``package``, one line each: a shortest cycle through
    each strongly connected component of the import graph, with the line of every import."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    lines = []
    for component in _strongly_connected(graph):
        start = min(component)
        step = min(m for m in graph.find_modules_directly_imported_by(start) if m in component)
        back = graph.find_shortest_chain(importer=step, imported=start)
        assert back is not None  # both are in one component
        cycle = [start, *back]
        hops = []
        for importer, imported in itertools.pairwise(cycle):
            detail = graph.get_import_details(importer=importer, imported=imported)[0]
            hops.append(f"{importer} (line {detail['line_number']}: {detail['line_contents']})")
        others = sorted(component - set(cycle))
        also = f"  [same component: {', '.join(others)}]" if others else ""
        lines.append(" -> ".join([*hops, start]) + also)
    return sorted(lines)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


# ------------------------------------------------------------------------------------------- gendm
def test_imports_flow_downward_through_the_layers():
    kept, report = lint_imports(ROOT / "pyproject.toml")
    assert kept, report


def test_no_modules_import_each_other_in_a_cycle():
    cycles = import_cycles("gendm")
    assert not cycles, "import cycles in gendm:\n" + "\n".join(cycles)


# --------------------------------------------------------------------- the checks can fail
TOY = {
    "__init__.py": "",
    "high.py": "VALUE = 1\n",
    "low.py": "def lazy():\n    from toy import high  # upward, inside a function\n\n    return high\n",
    "a.py": "from toy import b, typed\n",
    "b.py": "import toy.a\n",
    "typed.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from toy import a\n",
    "pkg/__init__.py": "from toy.pkg.child import VALUE\n",
    "pkg/child.py": "import toy.pkg\n\nVALUE = 1\n",
}
TOY_CONFIG = """
[tool.importlinter]
root_package = "toy"
exclude_type_checking_imports = true

[[tool.importlinter.contracts]]
name = "toy layers"
type = "layers"
containers = ["toy"]
layers = ["high", "low"]
"""


def _write_toy(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "toy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tmp_path / "pyproject.toml"
    config.write_text(textwrap.dedent(TOY_CONFIG))
    return config


def test_the_checks_flag_an_upward_import_and_cycles(tmp_path, monkeypatch):
    config = _write_toy(tmp_path, TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    kept, report = lint_imports(config, tmp_path)
    assert not kept
    assert "toy.low -> toy.high" in report, report
    cycles = import_cycles("toy")
    assert cycles == [  # a <-> b, and a package and its child; typed's TYPE_CHECKING import is no cycle
        "toy.a (line 1: from toy import b, typed) -> toy.b (line 1: import toy.a) -> toy.a",
        "toy.pkg (line 1: from toy.pkg.child import VALUE) -> toy.pkg.child (line 1: import toy.pkg) "
        "-> toy.pkg",
    ]


def test_the_checks_pass_once_the_imports_are_fixed(tmp_path, monkeypatch):
    fixed = TOY | {"low.py": "VALUE = 1\n", "b.py": "", "pkg/child.py": "VALUE = 1\n"}
    config = _write_toy(tmp_path, fixed)
    monkeypatch.syspath_prepend(str(tmp_path))
    kept, report = lint_imports(config, tmp_path)
    assert kept, report
    assert import_cycles("toy") == []
