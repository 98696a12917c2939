"""Training integration tests: losses fall, seeded determinism, checkpoints (round-trip, resume, refusal), 2-process DDP."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from musicml.artifacts import ArtifactError, load_weights, save_weights
from musicml.data.interactions import from_raw
from musicml.data.splits import leave_one_out
from musicml.models.sasrec import SASRec, SASRecConfig
from musicml.train.checkpoint import load_checkpoint, save_checkpoint
from musicml.train.core import TrainConfig
from musicml.train.sasrec import SASRecRecommender, load_sasrec

pytestmark = pytest.mark.timeout(120)


def _toy_split(n_users=80, n_items=30, length=14, seed=0):
    "Sequences where the next item is always item + 1 (mod n_items): learnable by a next-item model."
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)) % n_items
    x = from_raw(np.repeat(np.arange(n_users), length), items.ravel(), times=np.tile(np.arange(length), n_users))
    return leave_one_out(x)


def _model(loss="softmax", epochs=6, **kw):
    cfg = dict(max_epochs=epochs, batch_size=32, lr=5e-3, loss=loss, n_negatives=16, accelerator="cpu")
    cfg.update(kw)
    return SASRecRecommender(max_len=8, dim=16, layers=1, dropout=0.0, train=TrainConfig(**cfg))


@pytest.mark.parametrize("loss", ["bce", "softmax", "sampled"])
def test_loss_decreases(loss):
    import lightning as L

    class Rec(L.Callback):
        def __init__(self): self.values = []
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx): self.values.append(float(outputs["loss"]))
    s = _toy_split(); rec = Rec()
    m = _model(loss, epochs=8, logq=(loss == "sampled")).fit(s.train, s.valid, callbacks=[rec])
    first, last = np.mean(rec.values[:3]), np.mean(rec.values[-3:])
    assert last < 0.85 * first, (loss, first, last)
    assert m.report_.history[-1]["ndcg@10"] > m.report_.history[0]["ndcg@10"]


def test_seeded_determinism():
    s = _toy_split()
    a = _model(epochs=2, seed=3).fit(s.train, s.valid)
    b = _model(epochs=2, seed=3).fit(s.train, s.valid)
    c = _model(epochs=2, seed=4).fit(s.train, s.valid)
    for k, v in a.net_.state_dict().items():
        assert torch.equal(v, b.net_.state_dict()[k]), k
    assert not torch.equal(a.net_.item_emb.weight, c.net_.item_emb.weight)


def test_checkpoint_roundtrip_and_resume(tmp_path):
    s = _toy_split()
    full = _model(epochs=4, seed=1, restore_best=False).fit(s.train, s.valid)
    part = _model(epochs=2, seed=1, restore_best=False).fit(s.train, s.valid, out_dir=tmp_path / "run")
    last = tmp_path / "run/checkpoints/last"
    assert json.loads((last / "trainer_state.json").read_text())["epoch"] == 2
    resumed = _model(epochs=4, seed=1, restore_best=False).fit(s.train, s.valid, resume_from=last)
    assert resumed.report_.epochs == 4
    for k, v in full.net_.state_dict().items():
        torch.testing.assert_close(resumed.net_.state_dict()[k], v, atol=1e-5, rtol=1e-4)
    part.save(tmp_path / "art")
    loaded = load_sasrec(tmp_path / "art", s.train)
    np.testing.assert_allclose(loaded.score(np.arange(10)), part.score(np.arange(10)), rtol=1e-6)
    (tmp_path / "art/history.safetensors").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="art/history.safetensors: sha256 differs"):
        load_sasrec(tmp_path / "art", s.train)
    (last / "optimizer.safetensors").write_bytes(b"tampered")                  # a damaged checkpoint is not resumed from
    with pytest.raises(ArtifactError, match="last/optimizer.safetensors: sha256 differs"):
        _model(epochs=4, seed=1).fit(s.train, s.valid, resume_from=last)


def test_corrupt_and_mismatched_checkpoints_refused(tmp_path):
    net = SASRec(SASRecConfig(n_items=30, max_len=8, dim=16))
    p = save_weights(net, tmp_path / "model.safetensors")
    with pytest.raises(ArtifactError, match=r"model.safetensors: tensor 'item_emb.weight' has shape \(31, 16\), model expects \(41, 16\)"):
        load_weights(SASRec(SASRecConfig(n_items=40, max_len=8, dim=16)), p)
    with pytest.raises(ArtifactError, match="missing tensor"):
        load_weights(SASRec(SASRecConfig(n_items=30, max_len=8, dim=16, layers=3)), p)
    bad = tmp_path / "bad" / "model.safetensors"; bad.parent.mkdir()
    raw = bytearray(p.read_bytes()); raw[10:30] = b"\xff" * 20; bad.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="bad/manifest.json: no manifest"):    # unmanifested: refused before reading
        load_checkpoint(bad.parent, net)
    with pytest.raises(ArtifactError, match="bad/model.safetensors: not a readable safetensors file"):
        load_checkpoint(bad.parent, net, verify=False)
    ck = save_checkpoint(tmp_path / "ck", net, {"model": "sasrec"})
    load_checkpoint(ck, SASRec(SASRecConfig(n_items=30, max_len=8, dim=16)))    # untampered: loads
    (ck / "model.safetensors").write_bytes(bytes(raw))                           # same size, changed bytes
    with pytest.raises(ArtifactError, match="ck/model.safetensors: sha256 differs from manifest.json"):
        load_checkpoint(ck, net)
    trunc = tmp_path / "trunc.safetensors"; trunc.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(ArtifactError, match="trunc.safetensors"):
        load_weights(net, trunc)


_DDP_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from musicml.data.interactions import from_raw
    from musicml.data.splits import leave_one_out
    from musicml.train.sasrec import SASRecRecommender
    from musicml.train.core import TrainConfig
    if __name__ == "__main__":
        rng = np.random.default_rng(0); starts = rng.integers(0, 30, 64)
        items = (starts[:, None] + np.arange(12)) % 30
        x = from_raw(np.repeat(np.arange(64), 12), items.ravel(), times=np.tile(np.arange(12), 64))
        s = leave_one_out(x)
        m = SASRecRecommender(max_len=8, dim=16, layers=1, dropout=0.0,
                              train=TrainConfig(max_epochs=2, batch_size=16, lr=5e-3, loss="softmax", devices=2, accelerator="cpu"))
        m.fit(s.train, s.valid, out_dir=sys.argv[1])
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank == 0:
            print("RESULT " + json.dumps({"world_size": m.report_.world_size, "epochs": m.report_.epochs,
                                          "history": m.report_.history, "steps": m.report_.history[-1]["step"]}))
''')


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp_run.py"; script.write_text(_DDP_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=110,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert res["world_size"] == 2 and res["epochs"] == 2
    # 64 users -> 64+ windows; 2 processes x batch 16 -> about half the steps of one process
    assert res["steps"] <= 2 * -(-70 // 32) + 2
    assert (tmp_path / "out/checkpoints/last/model.safetensors").exists()
