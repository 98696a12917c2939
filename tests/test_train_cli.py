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


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_train_ray_reads_a_card_through_ray_data(tmp_path):
    "`musicml train --ray --dataset CARD`: the card read once through Ray Data, handed to the Ray Train worker; the artifact records that card and the split of a local read."
    pa = pytest.importorskip("pyarrow")
    pytest.importorskip("ray")
    import numpy as np
    import pyarrow.parquet as pq

    from musicml.data.tasks import load_task
    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    for k in range(2):
        pq.write_table(pa.table({"u": rng.integers(0, 30, 300), "i": rng.integers(0, 40, 300), "t": rng.integers(0, 10**6, 300)}),
                       tmp_path / "shards" / f"p{k}.parquet")
    card = tmp_path / "c.toml"
    card.write_text('name = "s"\nlicense = "CC0"\n[interactions]\npath = "shards"\nuser = "u"\nitem = "i"\ntimestamp = "t"\n')
    out = tmp_path / "art"
    r = subprocess.run([sys.executable, "-m", "musicml.train.cli", "train", "--model", "two_tower", "--dataset", str(card), "--ray",
                        "--workers", "1", "--epochs", "1", "--out", str(out)], capture_output=True, text=True, timeout=380,
                       env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ReadFilesParquet" in r.stderr                                      # Ray Data did the read
    m = verify_manifest(out / "model")
    assert m["dataset"] == str(card.resolve()) and m["split"] == load_task("two_tower", dataset=card)[1].summary()
