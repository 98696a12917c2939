"A tiny SASRec through the cpu and edge targets (few iterations); gpu on a CPU machine; compare on synthetic results."
import importlib.util
import json
import os

import pytest
import torch

from musicml.bench.compare import compare, regressions
from musicml.bench.targets import VARIANTS, TargetUnavailable, check_target, run_target, variants
from musicml.optimize.core import tiny_sasrec_task

PEAKS = dict(gflops=10.0, bandwidth_gbs=5.0)  # fixed: these tests check the bookkeeping, not the machine
FAST = dict(batch_sizes=(1, 4), iterations=20, threads=1, min_time_s=0.02, quality_batch=64, peaks=PEAKS, log=None)


@pytest.fixture(scope="module")
def task():
    return tiny_sasrec_task(n_items=60, dim=8, steps=10, n_eval=32)


def _check_ok(v: dict, task):
    assert v["status"] == "ok", v.get("reason")
    assert v["single_stream"]["n"] == 20 and len(v["single_stream"]["samples_ms"]) == 20
    assert v["single_stream"]["p50_ms"] <= v["single_stream"]["p99_ms"]
    assert [o["batch_size"] for o in v["offline"]] == [1, 4] and v["best"]["items_per_s"] > 0
    assert v["server"]["n"] >= 20 and v["server"]["latency"]["n"] == v["server"]["n"]
    assert 0 <= v["quality"]["ndcg@10"] <= 1 and v["quality"]["n_users"] == task.n_eval
    assert v["size_bytes"] > 0 and v["cost"]["flops_per_item"] > 0 and v["roofline"]["gflops"] > 0


def test_cpu_target(task, tmp_path):
    only = ["cpu-eager", "cpu-onnxruntime", "cpu-int8-dynamic"]
    res = run_target(task, "cpu", workdir=tmp_path, only=only, **FAST)
    json.dumps(res)
    assert res["threads"] == 1 and res["environment"]["torch"] and set(res["variants"]) == set(only)
    eager = res["variants"]["cpu-eager"]
    _check_ok(eager, task)
    assert eager["max_abs_err"] == 0 and eager["quality"]["top10_overlap"] == 1.0
    for name in only[1:]:
        v = res["variants"][name]
        if v["status"] == "unavailable":  # musicml.optimize.export / quantize or onnxruntime missing: said, not faked
            assert VARIANTS[name].available()[0] is False and v["reason"]
            continue
        _check_ok(v, task)
    onnx = res["variants"]["cpu-onnxruntime"]
    if onnx["status"] == "ok":
        assert onnx["max_abs_err"] < 1e-3 and onnx["quality"]["top10_overlap"] > 0.95
        assert onnx["artifact"].endswith(".onnx")


def test_edge_target(task, tmp_path):
    if not (importlib.util.find_spec("executorch") and importlib.util.find_spec("musicml.optimize.export")):
        pytest.skip("executorch or musicml.optimize.export is missing")
    only = ["edge-executorch-fp32-1t", "edge-executorch-fp32-allt"]  # int8 .pte export is tested in optimize.export
    res = run_target(task, "edge", workdir=tmp_path, only=only, **FAST)
    for name in only:
        v = res["variants"][name]
        _check_ok(v, task)
        assert v["artifact"].endswith(".pte") and v["threads"] == (1 if name.endswith("-1t") else os.cpu_count())
    assert res["variants"]["edge-executorch-fp32-1t"]["max_abs_err"] < 1e-3


def test_variants_registry_names_every_target():
    assert {v.target for v in VARIANTS.values()} == {"cpu", "edge", "gpu"}
    assert {"cpu-eager", "cpu-compile", "cpu-onnxruntime", "gpu-cuda-bf16", "gpu-tensorrt"} <= set(VARIANTS)
    assert all(v.threads == 1 for v in variants("edge") if v.name.endswith("-1t"))
    with pytest.raises(ValueError, match="unknown variants"):
        run_target(None, "cpu", only=["cpu-nope"], **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_target_unavailable_without_cuda():
    with pytest.raises(TargetUnavailable, match=r"no CUDA device .*torch.cuda.is_available\(\) = False"):
        check_target("gpu")
    with pytest.raises(TargetUnavailable):
        run_target(None, "gpu", **FAST)
    ok, why = VARIANTS["gpu-tensorrt"].available()
    assert not ok and why


def test_compare_flags_synthetic_regression(tmp_path):
    def res(p50, thr, ndcg):
        return dict(variants={"cpu-eager": dict(available=True, single_stream=dict(p50_ms=p50, p99_ms=3 * p50),
                                                best=dict(items_per_s=thr), quality={"ndcg@10": ndcg})})
    base, cur = tmp_path / "base.json", tmp_path / "cur.json"
    base.write_text(json.dumps(res(1.0, 1000, 0.3)))
    cur.write_text(json.dumps(res(1.25, 1000, 0.3)))
    bad = regressions(compare(cur, base, tolerance=0.1))
    assert {r["metric"] for r in bad} == {"p50_ms", "p99_ms"}
    assert not regressions(compare(cur, base, tolerance=0.3))
    cur.write_text(json.dumps(res(1.0, 1000, 0.29)))
    assert [r["metric"] for r in regressions(compare(cur, base))] == ["ndcg@10"]


def test_server_max_qps_under_a_p99_bound(task, tmp_path):
    "The server scenario's capacity search: a generous bound finds a positive rate within it, an impossible one finds 0."
    ok = run_target(task, "cpu", workdir=tmp_path, only=["cpu-eager"], p99_bound_ms=1000.0, **FAST)["variants"]["cpu-eager"]
    cap = ok["server_max_qps"]
    assert cap["qps"] > 0 and cap["p99_ms"] <= 1000.0 and cap["p99_bound_ms"] == 1000.0 and len(cap["history"]) == 6
    none = run_target(task, "cpu", workdir=tmp_path, only=["cpu-eager"], p99_bound_ms=1e-6, **FAST)["variants"]["cpu-eager"]
    assert none["server_max_qps"]["qps"] == 0.0
    assert run_target(task, "cpu", workdir=tmp_path, only=["cpu-eager"], **FAST)["variants"]["cpu-eager"]["server_max_qps"] is None
