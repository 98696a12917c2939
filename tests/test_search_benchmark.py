"""The search report notebook runs end to end with small settings and writes its JSON and plots."""
import json

import papermill as pm
import pytest
from conftest import ROOT


@pytest.mark.slow
def test_search_quality_report(data_dir, tmp_path):
    pm.execute_notebook(str(ROOT / "benchmarks_nbs/search_quality.ipynb"), str(tmp_path / "out.ipynb"),
                        parameters=dict(max_docs=300, n_tag_queries=5, n_aspect_queries=10, query_backends="fp32",
                                        encoder_backends="fp32,onnx-int8", encoder_docs=120, ann_kinds="hnsw", n_boot=100,
                                        output_dir=str(tmp_path), data_dir=str(data_dir)),
                        kernel_name="musicml", progress_bar=False, cwd=str(ROOT))
    res = json.loads((tmp_path / "search_quality.json").read_text())
    assert set(res["quality"]["fp32"]) == {"lastfm-tags", "musiccaps-aspects"}
    assert set(res["quality"]["fp32"]["musiccaps-aspects"]) == {"bm25", "dense", "hybrid", "hybrid-rrf"}
    assert 0 <= res["quality"]["fp32"]["musiccaps-aspects"]["hybrid"]["ndcg@10"] <= 1
    assert res["encoders"]["onnx-int8"]["cosine_mean"] > 0.95 and res["ann"]["hnsw"]["recall_at_10_vs_exact"] > 0
    assert res["environment"]["torch"] and any(k.startswith("musiccaps-aspects [test half]") for k in res["paired"])
    for png in ("search_quality.png", "search_latency.png", "search_encoders.png"):
        assert (tmp_path / png).stat().st_size > 5_000
