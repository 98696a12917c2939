"The inference_targets papermill report: edge with tiny settings, and gpu on a machine without CUDA ending cleanly."
import importlib.util
import json

import papermill as pm
import pytest
import torch
from conftest import ROOT

NB = str(ROOT / "benchmarks_nbs/inference_targets.ipynb")


def _run(tmp_path, **params):
    pm.execute_notebook(NB, str(tmp_path / "out.ipynb"), parameters=dict(output_dir=str(tmp_path), **params),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    return json.loads((tmp_path / f"inference_{params['target']}.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_report_ends_with_message(tmp_path):
    res = _run(tmp_path, target="gpu", train_budget_s=0)
    assert res["available"] is False and "no CUDA device" in res["reason"] and res["environment"]["torch"]
    out = (tmp_path / "out.ipynb").read_text()
    assert "is not available on this machine" in out and "Traceback" not in out


@pytest.mark.slow
def test_edge_report_tiny(tmp_path):
    if not (importlib.util.find_spec("executorch") and importlib.util.find_spec("musicml.optimize.export")):
        pytest.skip("executorch or musicml.optimize.export is missing")
    res = _run(tmp_path, target="edge", train_budget_s=0, batch_sizes="1,4", iterations=20, threads=1,
               variants="edge-executorch-fp32-1t", min_time_s=0.02)
    assert res["target"] == "edge" and res["environment"]["cpu"] and res["threads"] == 1
    for v in res["variants"].values():
        assert v["status"] == "ok", v.get("reason")
    for png in ("latency_throughput", "pareto", "roofline"):
        assert (tmp_path / f"inference_edge_{png}.png").stat().st_size > 5_000
