"Every model on any card (#17 items 3-4): `musicml evaluate --models all` on never-seen CSVs with and without timestamps, `--tune-minutes` selecting on validation, a model too big for memory skipped, cut-offs larger than the catalogue refused."
import json
import math

import numpy as np
import pytest
from conftest import run_cli

ALL = {"pop", "itemknn", "ease", "als", "two_tower", "sasrec", "ranker"}
EPOCHS = 2          # the networks' epochs capped (`--max-epochs`): the recipes' full runs take minutes on 2 shared cores
# The CLI runs once (the card with timestamps, every model); the other runs call `run_leaderboard` in this process, so
# torch and Lightning start once. One card with timestamps serves every test that does not need its own.


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


@pytest.fixture(scope="module")
def timed_card(tmp_path_factory):
    "A never-seen CSV with timestamps, string ids and '|' genres, and its card (random 8:1:1 split)."
    tmp = tmp_path_factory.mktemp("timed")
    head, body = _log(tmp, with_times=True)
    (tmp / "plays.csv").write_text(head + "\n" + "\n".join(body) + "\n")
    return _card(tmp, "plays", "plays.csv", 'split = "random"\nratios = [0.8, 0.1, 0.1]', True)


@pytest.mark.timeout(240)
def test_all_models_on_a_never_seen_card_with_timestamps(timed_card, tmp_path):
    out = tmp_path / "lb.json"
    p = run_cli("evaluate", "--models", "all", "--dataset", timed_card, "--max-epochs", EPOCHS, "--output", out)
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
def test_all_models_without_timestamps_skip_sasrec_and_refit_a_presplit_pair(tmp_path, caplog):
    from musicml.recipes.leaderboard import run_leaderboard
    head, body = _log(tmp_path, with_times=False, seed=6)
    (tmp_path / "train.csv").write_text(head + "\n" + "\n".join(body[:1500]) + "\n")
    (tmp_path / "test.csv").write_text(head + "\n" + "\n".join(body[1500:]) + "\n")
    card = _card(tmp_path, "pair", "train.csv", 'split = "presplit"\ntest_path = "test.csv"', False)
    res = run_leaderboard(str(card), ("all",), max_epochs=EPOCHS)
    assert set(res["models"]) == ALL - {"sasrec"} and "timestamps" in res["skipped"]["sasrec"]
    assert "sasrec skipped" in caplog.text and "refit on train+valid" in res["protocol"]
    _finite(res)
    tt = res["models"]["two_tower"]["training"]
    assert tt["refit_epochs"] == tt["best_epoch"] and "refit" in res["models"]["ranker"]["training"]
    assert res["models"]["ranker"]["training"]["feature_models"] == ["ease", "tag_profile"]   # genres, no friends table


@pytest.mark.timeout(240)
def test_tune_minutes_selects_on_validation(timed_card):
    from musicml.eval.evaluator import evaluate
    from musicml.models.baselines import EASE
    from musicml.recipes.leaderboard import load_split, run_leaderboard
    minutes = 0.3                                                   # pop, then EASE, then the two-tower: each gets 2+ trials
    res = run_leaderboard(str(timed_card), ("pop", "ease", "two_tower"), tune_minutes=minutes, max_epochs=EPOCHS)
    assert res["selection"] == "optuna" and res["tuning"]["minutes"] == minutes and res["wall_s"] < minutes * 60 + 40
    for n in ("ease", "two_tower"):
        tu = res["models"][n]["tuning"]
        done = [t for t in tu["trials"] if t["state"] == "COMPLETE"]
        assert len(done) >= 2 and all({"params", "value", "state", "duration_s"} <= set(t) for t in tu["trials"]), n
        assert res["models"][n]["valid"]["ndcg@10"] == max(t["value"] for t in done) == tu["trials"][tu["best_trial"]]["value"]
    # the trial values are validation scores: the chosen EASE refit on train scores exactly that on valid
    split, _ = load_split(str(timed_card))
    chosen = res["models"]["ease"]["tuning"]["chosen"]
    v = evaluate(EASE(chosen["l2"], chosen["weighting"]).fit(split.train), split.valid, exclude=split.train, ks=(10, 20), n_boot=0)
    assert v.metrics["ndcg@10"] == pytest.approx(res["models"]["ease"]["valid"]["ndcg@10"], abs=1e-12)
    tu = res["models"]["two_tower"]["tuning"]
    assert res["models"]["two_tower"]["params"]["dim"] == tu["chosen"]["dim"]       # the leaderboard reports the chosen network


@pytest.mark.timeout(120)
def test_a_network_too_big_for_memory_is_skipped_and_the_baselines_run(timed_card, monkeypatch, caplog):
    from musicml.models.baselines import EASE, check_memory
    from musicml.recipes.leaderboard import load_split, run_leaderboard
    from musicml.recipes.train import build_model
    from musicml.train.memory import network_memory
    split, _, d = load_split(str(timed_card), with_data=True)
    ease = check_memory(EASE(), split.train, available=2**62)
    tt = network_memory(build_model("two_tower", "optimized", d, split), split.train)[0]
    assert 4 * ease < tt                                            # a limit between them: EASE fits, the two-tower does not
    monkeypatch.setenv("MUSICML_MEMORY_LIMIT", str(int((ease * tt) ** 0.5)))
    res = run_leaderboard(str(timed_card), ("pop", "ease", "two_tower", "sasrec", "ranker"), grid="default", max_epochs=EPOCHS)
    assert set(res["models"]) == {"pop", "ease"} and {r["model"] for r in res["leaderboard"]} == {"pop", "ease"}
    sk = res["skipped"]
    for n in ("two_tower", "sasrec"):                               # refused up front: the size, what is there, what to use
        assert sk[n].startswith(f"{n}: fitting needs about") and "is available; use a smaller" in sk[n], sk[n]
        assert f"{n} skipped: {n}: fitting needs" in caplog.text
    assert "two_tower was skipped (two_tower: fitting needs" in sk["ranker"]
    with pytest.raises(ValueError, match="no model ran, every one requested was skipped: two_tower: fitting needs"):
        run_leaderboard(str(timed_card), ("two_tower",), grid="default", max_epochs=EPOCHS)


@pytest.mark.timeout(120)
def test_cutoffs_larger_than_the_catalogue_are_refused_before_fitting(tmp_path):
    rows = [f"u{u},i{(u * 3 + j) % 14},1" for u in range(30) for j in range(6)]
    (tmp_path / "tiny.csv").write_text("who,what,plays\n" + "\n".join(rows) + "\n")
    (tmp_path / "tiny.toml").write_text('name = "tiny"\nlicense = "CC0"\n[interactions]\npath = "tiny.csv"\nuser = "who"\n'
                                        'item = "what"\nweight = "plays"\n')   # default cut-offs: 10 and 20
    card = tmp_path / "tiny.toml"
    p = run_cli("evaluate", "--models", "all", "--dataset", card, check=False)
    assert p.returncode == 2 and "validation search" not in p.stderr, p.stderr
    assert f"{card}: the catalogue has 14 items but the cut-offs include 20" in p.stderr
    assert "lower protocol.cutoffs in the card or pass --ks (each at most 14)" in p.stderr
    p = run_cli("evaluate", "--models", "pop", "--dataset", card, "--ks", "5,10")     # what the message says to do
    assert "pop" in p.stdout
