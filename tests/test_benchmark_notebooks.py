"The papermill reports run end to end with small settings and write their JSON and plots."
import json

import papermill as pm
import pytest
from conftest import ROOT


@pytest.mark.slow
def test_model_quality_report(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/model_quality.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(models="pop,itemknn", grid="default", output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "model_quality.json").read_text())
    assert set(res["models"]) == {"pop", "itemknn"}
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000
    assert (tmp_path / "validation_search.png").exists()


@pytest.mark.slow
def test_training_efficiency_report_smoke(data_dir, tmp_path):
    "Both SASRec recipes for a few seconds each: the report's JSON, baseline comparison and plot are produced."
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/training_efficiency.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(budget_minutes=0.15, scaling=False, output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "training_efficiency_sasrec.json").read_text())
    assert set(res["summary"]) == {"reference", "optimized", "baseline_most_popular"}
    for name in ("reference", "optimized"):
        s = res["summary"][name]
        lo, hi = s["test_ndcg10_minus_popularity"]["ci95"]
        assert lo <= s["test_ndcg10_minus_popularity"]["mean"] <= hi
        assert 0 <= s["test_full_ndcg10"] <= 1 and s["throughput_samples_per_s"] > 0
    assert (tmp_path / "training_efficiency_sasrec.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compression_report_smoke(data_dir, tmp_path):
    "A 1-epoch teacher trained in the notebook, one pruning level per method, a 1-epoch student: JSON and both plots."
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/compression.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(teacher_dim=32, teacher_epochs=1, distill_epochs=1, finetune_epochs=1,
                                        structured_sparsities=0.5, magnitude_sparsities=0.5, latency_queries=30,
                                        output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "compression.json").read_text())
    assert {(r["method"], r["sparsity"]) for r in res["sweep"]} == {("structured", 0.0), ("structured", 0.5),
                                                                   ("magnitude", 0.0), ("magnitude", 0.5)}
    pruned = next(r for r in res["sweep"] if r["method"] == "structured" and r["sparsity"] == 0.5)
    assert pruned["params"] < res["distill"]["teacher"]["params"]
    s = res["summary"]
    assert s["test_ratio"]["ci_low"] <= s["test_ratio"]["ratio"] <= s["test_ratio"]["ci_high"]
    assert s["teacher"]["latency"]["p50_ms"] > 0 and res["environment"]["torch"]
    for png in ("compression_sweep.png", "compression_distill.png"):
        assert (tmp_path / png).stat().st_size > 10_000


@pytest.mark.slow
def test_live_ab_report_smoke(data_dir, tmp_path):
    "The real service with two arms, 300 simulated users: the A/A run passes, the broken canary rolls back by itself (about 50 s)."
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/live_ab.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(n_users=300, sessions=2, pre_sessions=1, canary_window_s=10, canary_min_requests=20,
                                        output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    r = json.loads((tmp_path / "live_ab.json").read_text())
    ab, aa, cn = r["ab"], r["aa"], r["canary"]
    assert ab["non_2xx"] == aa["non_2xx"] == cn["non_2xx"] == 0
    assert ab["joined"]["attributed"] == 2 * 300 * 10 and ab["joined"]["unattributed"] == 0   # every event joined to its exposure
    assert ab["control_n"] + ab["treatment_n"] == 300 and not ab["srm"]["mismatch"]
    assert ab["ci"][0] <= ab["effect"] <= ab["ci"][1] and 0 <= ab["power_at_observed_effect"] <= 1
    assert r["offline_recall@10"]["treatment (ease)"] > r["offline_recall@10"]["control (als)"]
    assert r["aa_passed"] and r["canary_rolled_back"] and cn["rollbacks_total"] == 1 and cn["state_after"] == "rolled_back"
    assert cn["after_rollback_on_champion"] == cn["requests_after_rollback"] > 0
    assert isinstance(r["detected"], bool)          # 300 users are too few to detect it reliably: the full profile does
    assert (tmp_path / "live_ab.png").stat().st_size > 10_000


@pytest.mark.slow
def test_data_scaling_report_smoke(tmp_path):
    "10^5 and 10^6 synthetic events as Parquet shards read through a card in fresh processes, evaluate pop,als at 10^5, EASE refused (about 40 s)."
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/data_scaling.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(sizes=[100_000, 1_000_000], evaluate_size=100_000, evaluate_models="pop,als",
                                        refuse_limit="64M", output_dir=str(tmp_path)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    r = json.loads((tmp_path / "data_scaling.json").read_text())
    assert [x["size"] for x in r["reads"]] == [100_000, 1_000_000]
    for x in r["reads"]:
        assert 0 < x["events"] <= x["size"] and x["report"][0] == {"step": "read", "removed": 0} and x["peak_rss_mb"] > x["compact_mb"]
    assert set(r["evaluate"]["leaderboard"]) == {"pop", "als"} and 0 < r["evaluate"]["leaderboard"]["als"]["ndcg@10"] < 1
    f = r["refusal"]
    assert f["rc"] != 0 and "ease: fitting needs about" in f["message"] and "use als or itemknn" in f["message"], f
    assert r["passed"] and (tmp_path / "data_scaling.png").stat().st_size > 10_000
