"""The serving benchmark notebooks (load, cost model) run end to end with tiny settings (synthetic bundle, loopback server)."""
import json
from pathlib import Path

import papermill as pm
import pytest

from musicml.recipes.bundles import build_synthetic_trained_artifacts

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serving_load_notebook(tmp_path):
    build_synthetic_trained_artifacts(tmp_path / "models", "v1", n_users=100, n_items=300, n_interactions=4000, epochs=1)
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/serving_load.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(models_dir=str(tmp_path / "models"), rps=40.0, duration=2.0, sweep_rps="20,40",
                                        sweep_duration=1.5, warmup=1.0, output_dir=str(tmp_path), shadow_rps=40.0,
                                        shadow_duration=1.0, shadow_repeats=2, burst_size=10, burst_rps=40.0, burst_duration=1.0),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "serving_load.json").read_text())
    assert set(res["sweep"]) == {"on", "off"} and res["main"]["requests"] == 80 and res["main"]["arrivals"] == "poisson"
    assert (res["bursts"]["requests"], res["bursts"]["errors"], res["bursts"]["arrivals"]) == (40, 0, "bursts:10")   # lockstep clients
    assert res["environment"]["cores"] >= 1 and set(res["model_path"]) == {"1", "4", "16", "32"}
    assert res["main"]["server_stats"]["cpu_ms_per_request"]["server"] > 0
    host = [res["main"][k] for k in ("host_busy", "host_idle", "host_steal")]   # the host's CPU shares over the run
    assert abs(sum(host) - 1) < 1e-6 and host[0] > 0 and all("host_steal" in s for s in res["sweep"]["on"])
    assert {s["kind"] for s in res["bundle"]["stages"].values()} == {"two_tower", "sasrec", "ease", "friends", "tag_profile",
                                                                     "itemknn", "dcn"}
    sh = res["shadow"]                                                # shadow off and on, side by side
    assert len(sh["p99_ms"]["on"]) == len(sh["p99_ms"]["off"]) == 2 and sh["errors"] == {"off": 0, "on": 0} and sh["shadow"]["compared"] > 0
    assert (tmp_path / "serving_sweep.png").stat().st_size > 10_000 and (tmp_path / "serving_main.png").exists()


@pytest.mark.slow
def test_serving_cost_notebook(tmp_path):
    build_synthetic_trained_artifacts(tmp_path / "models", "v1", n_users=100, n_items=300, n_interactions=4000, epochs=1)
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/serving_cost.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(models_dir=str(tmp_path / "models"), repeats=3, warmup=1, requests_e2e=30, cpu_rps=30.0,
                                        cpu_duration=2.0, output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "serving_cost.json").read_text())
    assert set(res["stages_ms_per_request"]) == {"1", "8", "32"}
    assert set(res["stages_ms_per_request"]["8"]) == {"query", "retrieve", "features", "network", "postprocess", "encode"}
    assert set(res["features_ms_per_request"]["1"]) == {"two_tower", "ease", "friends", "friends_share", "tag_profile"}
    for side in ("real", "floor"):                                   # both measured in this run, same client
        assert res[side]["open_loop"]["errors"] == 0 and res[side]["open_loop"]["server_cpu_ms_per_request"] > 0
        assert res[side]["sequential"]["p50_ms"] > 0
    assert res["real"]["sequential"]["p50_ms"] > res["floor"]["sequential"]["p50_ms"]      # the model costs something
    assert (tmp_path / "stage_cost.png").stat().st_size > 10_000 and (tmp_path / "floor.png").exists()
