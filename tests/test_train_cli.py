"""`musicml train` end to end (needs MUSICML_DATA): artifact directory with safetensors, config, metrics, manifest."""
import json
import os
import subprocess
import sys

import pytest

from musicml.artifacts import ArtifactError, verify_manifest

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.environ.get("MUSICML_DATA"), reason="MUSICML_DATA not set")]


def _train(tmp_path, *args):
    out = tmp_path / "art"
    r = subprocess.run([sys.executable, "-m", "musicml.train.cli", "train", "--out", str(out), "--no-progress",
                        "--threads", "1", *args], capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads(r.stdout.strip().splitlines()[-1])


def test_train_sasrec_writes_verified_artifact(tmp_path):
    out, res = _train(tmp_path, "--model", "sasrec", "--recipe", "reference", "--epochs", "2")
    art = out / "model"
    man = verify_manifest(art)
    assert {"model.safetensors", "config.json", "metrics.json", "history.safetensors", "history.json"} <= set(man["files"])
    assert man["model"] == "sasrec" and man["environment"]["torch"]
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_full"]["ndcg@10"] <= 1 and "test_sampled100" in metrics
    assert res["test_ndcg@10"] == metrics["test_full"]["ndcg@10"]
    assert (out / "checkpoints/last/optimizer.safetensors").exists()
    (art / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="model.safetensors: sha256 differs"):
        verify_manifest(art)


def test_train_two_tower_exports_item_embeddings(tmp_path):
    out, res = _train(tmp_path, "--model", "two_tower", "--epochs", "1")
    man = verify_manifest(out / "model")
    assert "item_embeddings.safetensors" in man["files"]
    from safetensors.numpy import load_file
    emb = load_file(str(out / "model/item_embeddings.safetensors"))["item_embeddings"]
    assert emb.shape[1] == 64 and emb.shape[0] > 10_000


def test_train_track_logs_an_mlflow_run(tmp_path):
    from musicml.experiment.tracking import list_runs
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    os.environ["MUSICML_TRACKING_URI"] = uri
    try:
        _train(tmp_path, "--model", "sasrec", "--recipe", "reference", "--epochs", "1", "--track")
        runs = list_runs(uri=uri)
    finally:
        del os.environ["MUSICML_TRACKING_URI"]
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.model"] == "sasrec" and run["params.recipe"] == "reference"
    assert 0 <= run["metrics.test_full.ndcg_at_10"] <= 1
