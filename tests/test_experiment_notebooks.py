"""The experimentation report notebooks run end to end under papermill with small parameters."""
import json
import os
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1] / "benchmarks_nbs"
DATA = os.environ.get("MUSICML_DATA")


def _run(name, tmp_path, **params):
    pm.execute_notebook(str(ROOT / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"), parameters=dict(output_dir=str(tmp_path), **params),
                        kernel_name="musicml", progress_bar=False, cwd=str(tmp_path))
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_ab_calibration_small(tmp_path):
    r = _run("ab_calibration", tmp_path, n_sims=300, n_units=200, msprt_units=500, cuped_sims=300, cuped_rhos=[0.7],
             srm_units=1_000_000, hash_ids=20_000, hash_buckets=100, interleaving_sizes=[100, 400], interleaving_reps=20,
             rankers=["Popularity", "ItemKNN"])
    assert r["environment"]["python"] and r["params"]["n_sims"] == 300
    names = {c["check"]: c["status"] for c in r["checks"]}
    assert names["SRM flags 50.5/49.5"] == "PASS" and names["SRM passes 50/50"] == "PASS"
    assert (tmp_path / "cuped.png").exists()
    assert bool(r["interleaving"]) == bool(DATA)


@pytest.mark.skipif(not DATA, reason="MUSICML_DATA not set")
def test_model_comparison_small(tmp_path):
    r = _run("model_comparison", tmp_path, models=["Popularity", "ItemKNN"], n_boot=200, track_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = [t for t in r["table"] if t["segmentation"] == "all" and t["metric"] == "ndcg@10"]
    assert len(rows) == 1 and rows[0]["model"] == "ItemKNN" and rows[0]["diff"] > 0 and rows[0]["significant"]
    assert {"p_holm", "p_bh", "p_wilcoxon", "boot_low", "boot_high"} <= set(rows[0])
    assert (tmp_path / "differences.png").exists() and (tmp_path / "segments.png").exists() and (tmp_path / "mlflow.db").exists()
