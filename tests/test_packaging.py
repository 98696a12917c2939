"The package installs, exposes its command and keeps its import cost low."
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


def test_wheel_contains_modules_and_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = tmp_path.glob("musicml-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for mod in ("musicml/core.py", "musicml/data/lastfm.py", "musicml/eval/evaluator.py", "musicml/models/baselines.py", "musicml/cli.py"):
        assert mod in names, mod
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "musicml = musicml.cli:main" in zipfile.ZipFile(whl).read(ep).decode()
    assert not any(n.startswith(("nbs/", "tests/")) for n in names)


def test_data_layer_does_not_import_torch():
    code = "import sys, musicml.data.lastfm, musicml.data.splits, musicml.eval.evaluator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_version_matches_metadata():
    from importlib.metadata import version

    import musicml
    assert musicml.__version__ == version("musicml")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MUSICML_TEST_VENVS"),
                    reason="builds a [serve]-only venv (~1 min with a warm pip cache); set MUSICML_TEST_VENVS=1")
def test_serve_only_install(tmp_path):
    "In a venv with only `musicml[serve]`: every module of base and serve imports, and a baseline service answers."
    from test_extras import GRAPH, MODULE_EXTRAS, extra_of
    src, venv = tmp_path / "src", tmp_path / "venv"
    shutil.copytree(ROOT / "musicml", src / "musicml", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md"): shutil.copy(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{src}[serve]"],
                   check=True, capture_output=True, timeout=900)
    mods = sorted(m for m in GRAPH if m != "musicml._modidx" and extra_of(m, MODULE_EXTRAS) <= {"base", "serve"})
    code = f"""
import asyncio, importlib, sys, tempfile, httpx
for m in {mods!r}: importlib.import_module(m)
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.app import Settings, create_app
d = tempfile.mkdtemp(); build_synthetic_artifacts(d, "v1", n_users=50, n_items=200, n_interactions=2000)
app = create_app(Settings(models=d))
async def go():
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for _ in range(100):
                if (await c.get("/readyz")).status_code == 200: break
                await asyncio.sleep(0.1)
            r = await c.post("/v1/recommendations", json={{"recent_artist_ids": [], "k": 5}})
            assert r.status_code == 200 and len(r.json()["items"]) == 5, r.text
asyncio.run(go())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning", "matplotlib", "pandas")))
"""
    p = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"
    assert subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0   # really not installed


def _closure(extra: str) -> set[str]:
    "Normalised names of every distribution `musicml[extra]` pulls in, read from the installed metadata (markers evaluated)."
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    seen, todo = set(), [("musicml", frozenset({extra}))]
    while todo:
        name, extras = todo.pop()
        try: reqs = requires(name) or []
        except PackageNotFoundError: continue                    # an optional dependency not installed here
        for r in map(Requirement, reqs):
            if r.marker and not any(r.marker.evaluate({"extra": e}) for e in (extras or {""})): continue
            n = canonicalize_name(r.name)
            if (n, frozenset(r.extras)) not in seen and n != "musicml":
                seen.add((n, frozenset(r.extras))); todo.append((n, frozenset(r.extras)))
    return {n for n, _ in seen}


def test_serve_install_pulls_no_training_or_notebook_stack():
    "What `pip install musicml[serve]` resolves to (this venv's metadata): no torch, Lightning, Jupyter or plotting."
    serve, lab = _closure("serve"), _closure("lab")
    assert {"fastapi", "uvicorn", "onnxruntime", "faiss-cpu", "prometheus-client"} <= serve
    heavy = {"torch", "lightning", "pytorch-lightning", "matplotlib", "jupyterlab", "notebook", "ipykernel", "nbdev",
             "papermill", "transformers", "ray", "mlflow", "executorch"}
    assert not serve & heavy, sorted(serve & heavy)
    assert {"jupyterlab", "ipykernel"} <= lab                       # the closure reader does see heavy stacks
