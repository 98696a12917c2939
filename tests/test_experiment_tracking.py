"""MLflow tracking writes only where it is told: the given sqlite URI (or the musicml cache), never $HOME or the working directory."""
import os
import subprocess
import sys
from pathlib import Path

CODE = """
from musicml.experiment.tracking import track, list_runs
import sys
for uri in (sys.argv[1], None):  # an explicit URI, then the default store ($MUSICML_CACHE/mlflow)
    with track("t", params={"model": "ease"}, uri=uri) as run:
        run.log_metrics({"ndcg@10": 0.2})
    df = list_runs(uri=uri)
    assert df.loc[0, "metrics.ndcg_at_10"] == 0.2 and df.loc[0, "status"] == "FINISHED", df
print("ok")
"""


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(tmp_path, *args, cache=None):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MUSICML_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"))
    if cache: env["MUSICML_CACHE"] = str(cache)
    r = subprocess.run([sys.executable, "-c", CODE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
    return home, cwd


def test_writes_only_to_the_given_store_or_the_cache(tmp_path):
    store, cache = tmp_path / "store", tmp_path / "cache"
    home, cwd = _run(tmp_path, f"sqlite:///{store / 'mlflow.db'}", cache=cache)
    assert _files(home) == [] and _files(cwd) == []
    files = _files(store)
    assert "mlflow.db" in files and any(f.endswith("environment.json") for f in files), files
    assert (cache / "mlflow" / "mlflow.db").exists() and any(p.name == "environment.json" for p in cache.rglob("*"))
    assert set(_files(cache)) <= {f for f in _files(cache) if f.startswith("mlflow/")}
