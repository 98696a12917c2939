"""The package's layers import only downward (docs/architecture.md has the picture).

Every module's imports are read with `ast` — module level, inside functions, and `importlib`-style strings naming a
musicml module — and checked against the layer order. A failure names file:line. Also refused: import cycles between
modules, imports between sibling packages of one layer, and `_private` names imported from another module.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "musicml"

# Lowest first. A module may import from its own layer's package and from any layer below it.
LAYERS = [
    ("core", {"musicml", "musicml.core"}),
    ("artifacts", {"musicml.artifacts"}),
    ("data", {"musicml.data"}),
    ("eval", {"musicml.eval"}),
    ("models", {"musicml.models"}),
    ("train", {"musicml.train"}),
    ("optimize", {"musicml.optimize"}),
    ("bench/search/experiment", {"musicml.bench", "musicml.search", "musicml.experiment"}),
    ("serve", {"musicml.serve"}),
    ("recipes", {"musicml.recipes"}),
    ("dist", {"musicml.dist"}),
    ("cli", set()),  # musicml.cli and every */cli.py: argparse front ends, free to import anything
]
MODULE_STRING = re.compile(r"^(musicml(?:\.[A-Za-z_]\w*)+)(?::[A-Za-z_]\w*)?$")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(mod: str) -> str:
    "The layer key of a module: `musicml.train.loop` -> `musicml.train`; `musicml.core` -> itself."
    parts = mod.split(".")
    return ".".join(parts[:2])


def layer_of(mod: str) -> int:
    if mod == "musicml.cli" or mod.endswith(".cli"):
        return len(LAYERS) - 1
    pkg = package_of(mod)
    for i, (_, pkgs) in enumerate(LAYERS):
        if pkg in pkgs or mod in pkgs:
            return i
    raise AssertionError(f"{mod}: not in any layer; add its package to LAYERS in tests/test_layers.py")


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path) -> list[tuple[str, str | None, int]]:
    "(imported musicml module, imported name or None, line) for every import in `path`, at any depth."
    mod, is_pkg = module_name(path, root), path.name == "__init__.py"
    known = {module_name(p, root) for p in root.rglob("*.py")}
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, is_pkg, node)
            for a in node.names:  # `from musicml.train import loop` imports the module musicml.train.loop
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in known else (target, a.name, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := MODULE_STRING.match(node.value)):
            if m.group(1) in known or package_of(m.group(1)) in known:
                out.append((m.group(1), None, node.lineno))
    return sorted({(m, n, line) for m, n, line in out if m == "musicml" or m.startswith("musicml.")}, key=lambda t: t[2])


def check(root: Path) -> list[str]:
    "Every violation of the layer rules under package directory `root`, as 'file:line: message'."
    problems, graph = [], {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "_modidx.py":
            continue
        mod = module_name(path, root)
        here = layer_of(mod)
        rel = path.relative_to(root.parent)
        for target, name, line in imports_of(path, root):
            if target == mod:
                continue
            there = layer_of(target)
            where = f"{rel}:{line}"
            if there > here:
                problems.append(f"{where}: {mod} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]}), a higher layer")
            elif there == here and here != len(LAYERS) - 1 and package_of(target) != package_of(mod):
                problems.append(f"{where}: {mod} imports its sibling package {package_of(target)}; siblings stay independent")
            if name and name.startswith("_") and not name.startswith("__"):
                problems.append(f"{where}: {mod} imports the private name {name} from {target}")
            graph.setdefault(mod, set()).add(target)
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return list(dict.fromkeys(problems))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "One cycle per strongly connected component of more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_layers_point_down():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        if path.name != "_modidx.py":
            layer_of(module_name(path, ROOT))


@pytest.fixture
def planted(tmp_path):
    "A copy of the package to plant bad imports in."
    root = tmp_path / "musicml"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(root: Path, rel: str, code: str) -> int:
    p = root / rel
    lines = p.read_text().splitlines()
    lines += code.splitlines()
    p.write_text("\n".join(lines) + "\n")
    return len(lines)  # the line of the planted code's last line


def test_planted_upward_import_fails(planted):
    line = _plant(planted, "data/splits.py", "def _bad():\n    from musicml.serve import pipeline")
    problems = check(planted)
    assert any(p.startswith(f"musicml/data/splits.py:{line}:") and "higher layer" in p for p in problems), problems


def test_planted_importlib_string_fails(planted):
    line = _plant(planted, "eval/metrics.py", 'import importlib\n_M = importlib.import_module("musicml.train.loop")')
    assert any(p.startswith(f"musicml/eval/metrics.py:{line}:") for p in check(planted))


def test_planted_private_import_and_cycle_fail(planted):
    _plant(planted, "core.py", "from musicml.data.datasets import DataFormatError")
    problems = check(planted)
    assert any("higher layer" in p for p in problems)
    assert any(p.startswith("import cycle:") and "musicml.core" in p for p in problems), problems
    _plant(planted, "data/splits.py", "from musicml.core import _private_helper")
    assert any("private name _private_helper" in p for p in check(planted))
