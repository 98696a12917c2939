"Every model on any card (#17 items 3-4): `musicml evaluate --models all` on never-seen CSVs with and without timestamps, and `--tune-minutes` selecting on validation."
import json
import math

import numpy as np
import pytest
from conftest import run_cli

ALL = {"pop", "itemknn", "ease", "als", "two_tower", "sasrec", "ranker"}
EPOCHS = 2          # the networks' epochs capped (`--max-epochs`): the recipes' full runs take minutes on 2 shared cores


def _log(tmp_path, with_times: bool, n_users=100, n_items=120, per_user=18, seed=5):
    "A play log nobody special-cased: string ids, play counts, '|' genres in an item file, times optional."
    rng = np.random.default_rng(seed)
    genres = ["jazz", "metal", "folk", "techno", "soul"]
    item_g = [sorted(set(rng.choice(genres, rng.integers(1, 3)).tolist())) for _ in range(n_items)]
    taste = rng.integers(0, len(genres), n_users)
    pop = rng.zipf(1.7, n_items).astype(float); pop /= pop.sum()
    rows = []
    for u in range(n_users):
        liked = np.array([genres[taste[u]] in g for g in item_g], float)
        p = pop * (1 + 6 * liked); p /= p.sum()
        t = int(rng.integers(1.6e9, 1.65e9))
        for i in rng.choice(n_items, per_user, replace=False, p=p):
            t += int(rng.integers(60, 86_400))
            rows.append((f"listener-{u:04d}", f"track/{i:04d}", int(rng.integers(1, 40)), t))
    (tmp_path / "tracks.csv").write_text("track_code,genres\n" + "".join(f"track/{i:04d},{'|'.join(g)}\n" for i, g in enumerate(item_g)))
    head = "who,what,plays" + (",at" if with_times else "")
    body = [f"{u},{i},{w}" + (f",{t}" if with_times else "") for u, i, w, t in rows]
    return head, body


def _card(tmp_path, name, interactions, protocol, with_times):
    (tmp_path / f"{name}.toml").write_text(f'''name = "{name}"
license = "CC0 (test data)"
[interactions]
path = "{interactions}"
user = "who"
item = "what"
weight = "plays"
{'timestamp = "at"' if with_times else ''}
[items]
path = "tracks.csv"
id = "track_code"
features = {{genres = "|"}}
[protocol]
{protocol}
''')
    return tmp_path / f"{name}.toml"


def _finite(res):
    for n, r in res["models"].items():
        assert all(math.isfinite(v) for k, v in r["test"].items() if isinstance(v, (int, float))), n


@pytest.mark.timeout(240)
def test_all_models_on_a_never_seen_card_with_timestamps(tmp_path):
    head, body = _log(tmp_path, with_times=True)
    (tmp_path / "plays.csv").write_text(head + "\n" + "\n".join(body) + "\n")
    card = _card(tmp_path, "plays", "plays.csv", 'split = "random"\nratios = [0.8, 0.1, 0.1]', True)
    out = tmp_path / "lb.json"
    p = run_cli("evaluate", "--models", "all", "--dataset", card, "--max-epochs", EPOCHS, "--output", out)
    res = json.loads(out.read_text())
    assert set(res["models"]) == ALL and res["skipped"] == {}
    _finite(res)
    assert {r["model"] for r in res["leaderboard"]} == ALL and "ranker" in p.stdout and "sasrec" in p.stdout
    for n in ("two_tower", "sasrec", "ranker"):                     # trained: epochs, fit time, params like the baselines
        r = res["models"][n]
        assert r["training"]["epochs"] >= r["training"]["best_epoch"] >= 1 and r["timings"]["fit_s"] > 0 and r["params"]["train"]
    assert "Epoch" in p.stdout + p.stderr                           # Lightning's progress bar
    assert res["max_epochs"] == EPOCHS and res["models"]["sasrec"]["training"]["epochs"] <= EPOCHS


@pytest.mark.timeout(240)
def test_all_models_without_timestamps_skip_sasrec_and_refit_a_presplit_pair(tmp_path):
    head, body = _log(tmp_path, with_times=False, seed=6)
    (tmp_path / "train.csv").write_text(head + "\n" + "\n".join(body[:1500]) + "\n")
    (tmp_path / "test.csv").write_text(head + "\n" + "\n".join(body[1500:]) + "\n")
    card = _card(tmp_path, "pair", "train.csv", 'split = "presplit"\ntest_path = "test.csv"', False)
    out = tmp_path / "lb.json"
    p = run_cli("evaluate", "--models", "all", "--dataset", card, "--max-epochs", EPOCHS, "--output", out)
    res = json.loads(out.read_text())
    assert set(res["models"]) == ALL - {"sasrec"} and "timestamps" in res["skipped"]["sasrec"]
    assert "sasrec skipped" in p.stderr and "refit on train+valid" in res["protocol"]
    _finite(res)
    tt = res["models"]["two_tower"]["training"]
    assert tt["refit_epochs"] == tt["best_epoch"] and "refit" in res["models"]["ranker"]["training"]
    assert res["models"]["ranker"]["training"]["feature_models"] == ["ease", "tag_profile"]   # genres, no friends table


@pytest.mark.timeout(240)
def test_tune_minutes_selects_on_validation(tmp_path):
    from musicml.eval.evaluator import evaluate
    from musicml.models.baselines import EASE
    from musicml.recipes.leaderboard import load_split
    head, body = _log(tmp_path, with_times=True, seed=7)
    (tmp_path / "plays.csv").write_text(head + "\n" + "\n".join(body) + "\n")
    card = _card(tmp_path, "plays", "plays.csv", 'split = "random"\nratios = [0.8, 0.1, 0.1]', True)
    out = tmp_path / "lb.json"
    run_cli("evaluate", "--models", "pop,ease,two_tower", "--dataset", card, "--tune-minutes", "0.5", "--max-epochs", EPOCHS, "--output", out)
    res = json.loads(out.read_text())
    assert res["selection"] == "optuna" and res["tuning"]["minutes"] == 0.5 and res["wall_s"] < 30 + 40
    for n in ("ease", "two_tower"):
        tu = res["models"][n]["tuning"]
        done = [t for t in tu["trials"] if t["state"] == "COMPLETE"]
        assert len(done) >= 2 and all({"params", "value", "state", "duration_s"} <= set(t) for t in tu["trials"]), n
        assert res["models"][n]["valid"]["ndcg@10"] == max(t["value"] for t in done) == tu["trials"][tu["best_trial"]]["value"]
    # the trial values are validation scores: the chosen EASE refit on train scores exactly that on valid
    split, _ = load_split(str(card))
    chosen = res["models"]["ease"]["tuning"]["chosen"]
    v = evaluate(EASE(chosen["l2"], chosen["weighting"]).fit(split.train), split.valid, exclude=split.train, ks=(10, 20), n_boot=0)
    assert v.metrics["ndcg@10"] == pytest.approx(res["models"]["ease"]["valid"]["ndcg@10"], abs=1e-12)
    tu = res["models"]["two_tower"]["tuning"]
    assert res["models"]["two_tower"]["params"]["dim"] == tu["chosen"]["dim"]       # the leaderboard reports the chosen network
