"Ray executors of musicml.dist: preprocessing equal to the local path, 2-worker training with a killed worker, batch scoring."
import json
import os

import numpy as np
import pytest

pytest.importorskip("ray")

from musicml.data.synthetic import SyntheticConfig  # noqa: E402
from musicml.dist.data import (  # noqa: E402
    FIELDS,
    PARTS,
    load_prepared,
    prepare_local,
    prepare_ray,
    ray_session,
    reference_prepare,
    write_synthetic_parquet,
)
from musicml.dist.score import load_two_tower_prepared, read_topk, score_local, score_ray  # noqa: E402
from musicml.dist.train import fit_two_tower_prepared, ray_fit  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    "One local Ray (2 CPUs) for the module, run with HOME pointing at an empty directory that must stay empty."
    root = tmp_path_factory.mktemp("dist")
    home = root / "home"
    home.mkdir()
    old = {k: os.environ.get(k) for k in ("HOME", "MPLCONFIGDIR")}
    os.environ["HOME"] = str(home)
    os.environ["MPLCONFIGDIR"] = str(root / "mpl")  # matplotlib (imported by workers) caches fonts under ~ otherwise
    write_synthetic_parquet(SyntheticConfig(n_users=300, n_items=400, n_genres=5, n_interactions=24_000, seed=5),
                            root / "log", rows_per_shard=7_000)
    try:
        with ray_session(num_cpus=2):
            yield root
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert sorted(p.name for p in home.iterdir()) == [], "Ray wrote into the home directory"


def test_prepare_ray_identical_to_local(env):
    a = prepare_local(env / "log", env / "local", seed=3, events_per_bucket=5_000)
    b = prepare_ray(env / "log", env / "ray_prep", seed=3, events_per_bucket=5_000, batch_size=4_000)
    assert (a["buckets"], b["buckets"], b["executor"]) == (5, 5, "ray")
    assert a["sha256"] == b["sha256"] and len(a["sha256"]) == len(PARTS) * len(FIELDS) + 2
    ref, got = reference_prepare(env / "log", seed=3), load_prepared(env / "ray_prep")
    for p in PARTS:
        for f in FIELDS:
            assert np.asarray(getattr(getattr(got, p), f)).tobytes() == getattr(getattr(ref, p), f).tobytes(), (p, f)
    assert not (env / "ray_prep" / "_work").exists()


def test_two_workers_resume_after_kill(env):
    prep = env / "local"
    if not prep.exists():
        prepare_local(env / "log", prep, seed=3)
    marker = env / "crashed"
    res = ray_fit(fit_two_tower_prepared, dict(prepared=str(prep), max_epochs=3, batch_size=128, seed=0), env / "train",
                  num_workers=2, max_failures=1, crash=dict(marker=str(marker), epoch=1, batch=2, rank=1))
    assert marker.exists(), "the injected worker death did not happen"
    assert res["world_size"] == 2 and res["num_workers"] == 2
    assert res["resumed_from_epoch"] == 1            # epoch 1's checkpoint was reported before the kill in epoch 2
    assert res["epochs"] == 3                        # and the resumed run finished the schedule
    assert [h["epoch"] for h in res["history"]] == [1, 2]  # the resumed attempt's validations (epochs 2-3, counted from 1)
    assert 0 < res["best_ndcg"] <= 1
    state = json.loads((env / "train" / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 3
    assert (env / "train" / "model" / "model.safetensors").is_file()
    assert any((env / "train" / "ray").rglob("trainer_state.json")), "no checkpoint in Ray's storage path"


def test_score_ray_matches_local(env):
    prep, model = env / "local", env / "train" / "model"
    if not prep.exists():
        prepare_local(env / "log", prep, seed=3)
    if not model.exists():
        fit_two_tower_prepared(env / "train", prepared=str(prep), max_epochs=1, batch_size=128)
    kw = dict(model_dir=str(model), prepared=str(prep))
    n = load_prepared(prep).train.n_users
    score_local(load_two_tower_prepared, kw, n, env / "topk_local", k=5, batch_size=100)
    r = score_ray(load_two_tower_prepared, kw, n, env / "topk_ray", k=5, batch_size=100)
    assert r["pool"]["concurrency"] == 1  # 2 CPUs: one scoring actor, one CPU left for reading and writing
    a, b = read_topk(env / "topk_local"), read_topk(env / "topk_ray")
    assert len(a) == n * 5
    assert a[["user", "rank", "item", "user_id", "item_id"]].equals(b[["user", "rank", "item", "user_id", "item_id"]])
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5, atol=1e-6)
