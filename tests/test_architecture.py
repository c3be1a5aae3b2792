"""The shape of the package: imports run one way through the layers, no module takes part in a cycle, and
the command line answers ``--help`` without loading the heavy libraries.

The layers, lowest first (a module may import its own package and anything in a lower layer):

    core -> data, graph -> surgery -> models -> practise, swd, udfc -> strategies -> runtime -> export
         -> torch_pruning, nncf -> api -> cli -> __main__

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a deferred import is
still a dependency, and a cycle through one is still a cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "practise_plugin"
LAYERS = [
    {"core"}, {"data", "graph"}, {"surgery"}, {"models"}, {"practise", "swd", "udfc"}, {"strategies"}, {"runtime"},
    {"export"}, {"torch_pruning", "nncf"}, {"api"}, {"cli"}, {"__main__"},
]
HEAVY = ("torch", "torchvision", "timm", "openvino", "nncf", "torch_pruning", "numpy", "jsonschema", "rich")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (relative imports resolved, ``from . import x`` read as
    the module ``x`` when it is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "practise_plugin")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "practise_plugin":
                target = node.module
            else:
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            out.update(subs if subs else [target])
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, top-level part) of a module; the root package is a facade with no static imports."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1, ""
    top = parts[1]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i, top
    raise AssertionError(f"{module} is in no layer; add {top!r} to LAYERS in {__file__}")


def test_every_import_runs_downward_or_stays_in_its_package():
    wrong = []
    for module, deps in _graph().items():
        here, top = _layer(module)
        for dep in deps:
            there, dep_top = _layer(dep)
            if dep_top == top or there < here or there == -1:
                continue
            wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_planted_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The two checks above can fail: run them on a copy of the package with a bad import added."""
    import shutil

    copy = tmp_path / "practise_plugin"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.pt", "*.npz", "__pycache__"))
    errors = copy / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom ..api import compress  # noqa\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    with pytest.raises(AssertionError, match="practise_plugin.core.errors -> practise_plugin.api"):
        test_every_import_runs_downward_or_stays_in_its_package()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


@pytest.mark.parametrize("argv", [["--help"], ["compress", "--help"], ["nncf", "--help"], ["strategies", "--help"],
                                  ["bench", "--help"], ["export", "--help"], ["discover", "--help"],
                                  ["compress", "--latency-reduction", "0"], ["compress", "--strategy", "nope"],
                                  ["compress", "--recover-iters", "-3"]])
def test_help_loads_no_heavy_library(argv):
    """``practise ... --help`` and an option error must answer at once: none of torch, OpenVINO, NNCF,
    Torch-Pruning, timm is imported (measured CPU time is in the README; this checks the cause, which does
    not depend on load)."""
    code = (
        "import sys, json\n"
        "from practise_plugin.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []
