"""Pruning and distillation of SASRec on tiny synthetic data (no dataset needed)."""
import copy

import numpy as np
import pytest
import torch

from musicml.data.interactions import from_raw
from musicml.data.splits import leave_one_out
from musicml.models.sasrec import SASRec, SASRecConfig
from musicml.optimize.distill import DistillTask, distill, kd_loss, paired_ratio_ci
from musicml.optimize.prune import (
    finetune,
    magnitude_prune,
    param_count,
    prune_embedding_dim,
    prune_ffn,
    prune_heads,
    seq_data,
    size_bytes,
    sparsity_sweep,
    structured_prune,
    weight_sparsity,
)
from musicml.train.core import TrainConfig

N_ITEMS, MAX_LEN = 30, 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n_u, n = 50, 10
    starts = rng.integers(0, N_ITEMS, n_u)
    x = from_raw(np.repeat(np.arange(n_u), n), ((starts[:, None] + np.arange(n)) % N_ITEMS).ravel(),
                 times=np.tile(np.arange(n), n_u))
    return seq_data(leave_one_out(x), max_len=MAX_LEN)


def _net(dim=16, heads=2, layers=2, seed=0):
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(N_ITEMS, MAX_LEN, dim=dim, heads=heads, layers=layers, dropout=0.0)).eval()


def _cfg(epochs):
    return TrainConfig(max_epochs=epochs, batch_size=32, lr=5e-3, loss="softmax", accelerator="cpu")


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_magnitude_prune_hits_sparsity_and_runs(data, scope, sparsity):
    net = _net()
    rep = magnitude_prune(net, sparsity, scope=scope)
    assert abs(rep["sparsity"] - sparsity) < 0.01
    assert abs(weight_sparsity(net) - sparsity) < 0.01
    out = net(data.val[0][:4])
    assert out.shape == (4, MAX_LEN, 16) and torch.isfinite(out).all()


def test_masked_finetune_keeps_zeros(data):
    net = _net(layers=1)
    magnitude_prune(net, 0.5)
    finetune(net, data, _cfg(2), keep_zeros=True)
    assert abs(weight_sparsity(net) - 0.5) < 0.01


def test_structured_pruning_shrinks_and_keeps_shapes(data):
    net = _net()
    tok = data.val[0]
    for pruned in (prune_heads(net, 1, tok), prune_ffn(net, 4, tok), prune_embedding_dim(net, 8, tok),
                   structured_prune(net, 0.5, tok)):
        assert param_count(pruned) < param_count(net)
        h = pruned.eval()(tok)
        assert h.shape[:2] == (len(tok), MAX_LEN)
        scores = h[:, -1] @ pruned.item_vectors().T
        assert scores.shape == (len(tok), N_ITEMS)
    assert size_bytes(prune_embedding_dim(net, 8, tok)) < 0.6 * size_bytes(net)


def test_bad_arguments_give_clear_errors(data):
    net = _net()
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
            magnitude_prune(copy.deepcopy(net), s)
    with pytest.raises(ValueError, match="scope"):
        magnitude_prune(net, 0.5, scope="rows")
    with pytest.raises(ValueError, match=r"keep must be in \[1, 2\]"):
        prune_heads(net, 3)
    with pytest.raises(ValueError, match=r"keep must be in \[1, 2\]"):
        prune_heads(net, 0)
    with pytest.raises(ValueError, match=r"keep must be in \[1, 16\]"):
        prune_ffn(net, 17)
    with pytest.raises(ValueError, match=r"keep must be in \[1, 16\]"):
        prune_embedding_dim(net, 32)
    with pytest.raises(ValueError, match="method"):
        sparsity_sweep(net, data, method="random")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    small = SASRecConfig(N_ITEMS, MAX_LEN, dim=8, heads=1, layers=1)
    with pytest.raises(ValueError, match="alpha must be in"):
        DistillTask(SASRec(small), net, _cfg(1), alpha=-0.1)
    with pytest.raises(ValueError, match="must equal the teacher"):
        distill(net, data, SASRecConfig(N_ITEMS + 1, MAX_LEN, dim=8), _cfg(1))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_kd_loss_zero_iff_same_distribution(temperature):
    torch.manual_seed(0)
    t = torch.randn(8, 40)
    assert kd_loss(t.clone(), t, temperature).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(torch.randn(8, 40), t, temperature).item() > 1e-3
    assert kd_loss(t * 0.5, t, temperature).item() > 1e-4   # a flatter distribution is different


def test_tiny_distillation_reduces_kd_loss(data):
    teacher = _net(dim=32, layers=2)
    finetune(teacher, data, _cfg(10))
    scfg = SASRecConfig(N_ITEMS, MAX_LEN, dim=8, heads=1, layers=1, dropout=0.0)
    batch = {"inp": data.inp, "tgt": data.tgt}

    def kd(student):
        with torch.no_grad():
            return DistillTask(student, teacher, _cfg(1), kd_positions=10_000).kd_term(batch)[0].item()

    torch.manual_seed(0)
    before = kd(SASRec(scfg))
    student, rep = distill(teacher, data, scfg, _cfg(10), alpha=1.0, latency_queries=0)
    assert kd(student) < 0.85 * before
    assert rep["size_ratio"] > 3 and rep["student"]["params"] < rep["teacher"]["params"]


def test_paired_ratio_ci():
    a = np.random.default_rng(0).random(300)
    r = paired_ratio_ci(a, 0.9 * a)
    assert r["ratio"] == pytest.approx(0.9) and r["ci_low"] == pytest.approx(0.9) and r["p_ratio_ge_0.95"] == 0.0
