"""Two-tower and ranker training: loss falls on a tiny dataset, seeded determinism, checkpoint round-trip."""
import numpy as np
import pytest
import torch

from musicml.artifacts import ArtifactError, load_weights, save_weights
from musicml.data.interactions import from_raw
from musicml.data.splits import random_split
from musicml.models.two_tower import TwoTower, item_tag_matrix
from musicml.train.core import TrainConfig
from musicml.train.ranker import RankerRecommender
from musicml.train.two_tower import TwoTowerRecommender

pytestmark = pytest.mark.timeout(120)


def _data(n_u=80, n_i=40, seed=0):
    rng = np.random.default_rng(seed)
    grp = np.arange(n_u) % 2
    us = np.repeat(np.arange(n_u), 10)
    its = grp[us] * (n_i // 2) + rng.integers(0, n_i // 2, len(us))
    x = from_raw(us, its, weights=rng.integers(1, 100, len(us)).astype(np.float32)).first_occurrences()
    tags, n_tags = item_tag_matrix({"artist_id": np.arange(n_i), "tag_id": np.arange(n_i) // (n_i // 2)}, x.item_ids, width=2)
    return random_split(x, seed=0), tags, n_tags


def _tt(tags, n_tags, epochs=6, seed=0):
    return TwoTowerRecommender(tags, n_tags, dim=16, train=TrainConfig(max_epochs=epochs, batch_size=32, lr=5e-3, logq=True,
                                                                       seed=seed, accelerator="cpu"))


def test_two_tower_learns_and_is_deterministic():
    s, tags, nt = _data()
    a = _tt(tags, nt, seed=1).fit(s.train, s.valid)
    b = _tt(tags, nt, seed=1).fit(s.train, s.valid)
    h = a.report_.history
    assert h[-1]["ndcg@10"] > h[0]["ndcg@10"]
    np.testing.assert_array_equal(a.item_embeddings(), b.item_embeddings())
    assert a.item_embeddings().shape == (s.train.n_items, 16)


def test_two_tower_checkpoint_roundtrip_and_mismatch(tmp_path):
    s, tags, nt = _data()
    a = _tt(tags, nt, epochs=1).fit(s.train, s.valid)
    p = save_weights(a.net_, tmp_path / "tt.safetensors")
    net = TwoTower(a.net_.cfg, a.net_.history.clone(), a.net_.item_tags.clone())
    load_weights(net, p)
    torch.testing.assert_close(net.all_items(), a.net_.all_items())
    bad_cfg = type(a.net_.cfg)(**{**a.net_.cfg.__dict__, "dim": 8})
    with pytest.raises(ArtifactError, match="tt.safetensors: tensor '.*' has shape"):
        load_weights(TwoTower(bad_cfg, a.net_.history, a.net_.item_tags), p)


def test_saved_models_refuse_tampered_files(tmp_path):
    from musicml.train.checkpoint import save_checkpoint
    from musicml.train.ranker import load_ranker
    from musicml.train.two_tower import load_two_tower
    s, tags, nt = _data()
    tt = _tt(tags, nt, epochs=1).fit(s.train, s.valid)
    save_checkpoint(tmp_path / "tt", tt.net_, tt.config())
    np.testing.assert_allclose(load_two_tower(tmp_path / "tt", s.train, tags, nt).score(np.arange(5)), tt.score(np.arange(5)), rtol=1e-6)
    w = tmp_path / "tt/model.safetensors"; b = w.read_bytes(); w.write_bytes(b[:-1] + bytes([b[-1] ^ 1]))
    with pytest.raises(ArtifactError, match="tt/model.safetensors: sha256 differs"):
        load_two_tower(tmp_path / "tt", s.train, tags, nt)
    rk = RankerRecommender(tt, tags, nt, n_candidates=10, dim=8,
                           train=TrainConfig(max_epochs=1, batch_size=16, accelerator="cpu", progress=False)).fit(s.train, s.valid)
    rk.save(tmp_path / "rk")
    np.testing.assert_allclose(load_ranker(tmp_path / "rk", split=s, item_tags=tags, n_tags=nt)[0].score(np.arange(5)),
                               rk.score(np.arange(5)), rtol=1e-5)
    (tmp_path / "rk/features.safetensors").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="rk/features.safetensors: sha256 differs"):
        load_ranker(tmp_path / "rk", split=s, item_tags=tags, n_tags=nt)


def test_ranker_reranks_retrieval_candidates():
    s, tags, nt = _data()
    tt = _tt(tags, nt, epochs=4).fit(s.train, s.valid)
    rk = RankerRecommender(tt, tags, nt, n_candidates=15, dim=8,
                           train=TrainConfig(max_epochs=4, batch_size=16, lr=5e-3, accelerator="cpu"))
    rk.fit(s.train, s.valid)
    sc = rk.score(np.arange(5))
    assert sc.shape == (5, s.train.n_items)
    assert ((sc > -1e8).sum(1) == 15).all()  # only the retrieved candidates are scored
    assert len(rk.report_.history) == 4


def test_stacked_ranker_folds_side_feature_and_ensemble_are_seeded():
    from musicml.models.ranker import DCNEnsemble
    from musicml.models.side_info import TagProfile
    s, tags, nt = _data()
    tt = _tt(tags, nt, epochs=2).fit(s.train, s.valid)

    def fit():
        return RankerRecommender(tt, tags, nt, n_candidates=15, dim=8, feature_models=(TagProfile(tags).fit(s.train),),
                                 label_folds=2, ensemble=2,
                                 train=TrainConfig(max_epochs=2, batch_size=16, lr=5e-3, accelerator="cpu", progress=False)
                                 ).fit(s.train, s.valid)
    a, b = fit(), fit()
    assert isinstance(a.net_, DCNEnsemble) and len(a.net_.members) == 2
    np.testing.assert_array_equal(a.score(np.arange(10)), b.score(np.arange(10)))
    folds = a.fold_lists(s.train, s.valid)
    assert len(folds) == 2
    train_csr = s.train.csr()
    for f in folds:
        assert f["raw"].shape[-1] == 7 and f["items"].shape[1] == 15          # 6 own features + the tag profile
        assert (f["gains"].sum(1) > 0).any()                                     # the fold's plays label some candidates
        # every labelled candidate is a training play of that user: the labels come from train, not from valid/test
        u, j = np.nonzero(f["gains"])
        assert (np.asarray(train_csr[f["user"][u], f["items"][u, j]]).ravel() > 0).all()
    assert a.report_.epochs == 4 and {h["member"] for h in a.report_.history} == {0, 1}
