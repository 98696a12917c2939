"""A dataset nobody here has looked at, from a drafted card to a live service (#17): `musicml serve build-artifacts --dataset
CARD` writes a bundle of all its events with the card's titles and licence, and `musicml serve` answers for its users on
loopback; a card whose ids are strings serves them as strings, and a string sent to an integer-id bundle is a clear 422."""
import json

import httpx
import numpy as np
from conftest import run_cli

from musicml.serve.loadgen import ServerProcess


def _movielens_like(tmp_path, n_users=200, n_items=300, per_user=20, seed=5):
    "A MovieLens-shaped export: ratings.csv (userId,movieId,rating,timestamp in unix s) and movies.csv (movieId,title,genres)."
    rng = np.random.default_rng(seed)
    genres = ["Action", "Drama", "Comedy", "Thriller", "Animation"]
    g = [sorted(set(rng.choice(genres, rng.integers(1, 3)).tolist())) for _ in range(n_items)]
    pop = rng.zipf(1.5, n_items).astype(float); pop /= pop.sum()
    rows = [f"{u + 1},{10 * i + 7},{rng.integers(1, 11) / 2:.1f},{1_500_000_000 + int(rng.integers(0, 9e7))}"
            for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False, p=pop)]
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(
        f'{10 * i + 7},"Movie {i}, The ({1990 + i % 30})",{"|".join(g[i])}' for i in range(n_items)) + "\n")
    return tmp_path / "ratings.csv"


def _liked(src) -> dict:
    "What a bundle knows each user liked: the drafted card keeps ratings >= 4 (user -> set of item ids)."
    seen = {}
    for line in src.read_text().splitlines()[1:]:
        u, i, r, _ = line.split(",")
        if float(r) >= 4: seen.setdefault(int(u), set()).add(int(i))
    return seen


def test_a_drafted_card_builds_a_bundle_that_serves(tmp_path):
    src = _movielens_like(tmp_path)
    card = tmp_path / "movies.toml"
    run_cli("data", "card", src, "--out", card)
    # the edits docs/datasets.md describes: a licence, and the item file with titles and genres
    text = card.read_text().replace('license = ""', 'license = "test data, CC0"')
    card.write_text(text + '\n[items]\npath = "movies.csv"\nid = "movieId"\nname = "title"\nfeatures = {"genres" = "|"}\n')
    run_cli("data", "validate", card)
    models = tmp_path / "models"
    p = run_cli("serve", "build-artifacts", "--dataset", card, "--out", models, "--retrievers", "itemknn,als", "--version", "m1")
    v = models / "m1"
    assert p.stdout.strip().endswith(str(v))
    man = json.loads((v / "manifest.json").read_text())
    assert man["data"]["data_card"]["license"] == "test data, CC0" and man["data"]["dataset"] == str(card)
    assert man["data"]["offline"]["results"]["itemknn"]["metrics"]["ndcg@10"] > 0     # measured on the card's own split
    assert "--dataset" in man["data"]["reproduce"]
    seen = _liked(src)
    with ServerProcess(str(models)) as srv:
        for u in (1, 57, 200):
            r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": u, "k": 10}, timeout=30)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert len(items) == 10 and r.json()["model_version"] == "m1" and r.json()["path"] == "personalized"
            assert all(a["artist_id"] % 10 == 7 and a["name"].startswith("Movie ") for a in items)   # the card's ids and titles
            assert not {a["artist_id"] for a in items} & seen[u]                                       # nothing already rated
        s = httpx.get(srv.url + f"/v1/artists/{items[0]['artist_id']}/similar", timeout=30)
        assert s.status_code == 200 and s.json()["items"]
        assert httpx.post(srv.url + "/v1/recommendations", json={"user_id": 99999, "k": 5}, timeout=30).json()["path"] == "cold_start"


def test_string_ids_are_served_as_strings(tmp_path):
    "A card whose ids are strings (Last.fm 1K, Amazon, MSD style) builds a bundle that takes and answers with those strings."
    rows = [f"user_{u:03d},track/{(u * 7 + j * 3) % 60:02d},{1 + (u + j) % 5}" for u in range(80) for j in range(12)]
    (tmp_path / "log.csv").write_text("listener,track,n\n" + "\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('name = "s"\n[interactions]\npath = "log.csv"\nuser = "listener"\nitem = "track"\nweight = "n"\n')
    run_cli("evaluate", "--dataset", tmp_path / "c.toml", "--models", "pop", "--grid", "default")
    models = tmp_path / "models"
    run_cli("serve", "build-artifacts", "--dataset", tmp_path / "c.toml", "--out", models, "--retrievers", "itemknn,als", "--version", "s1")
    seen = {}
    for r in rows: u, i, _ = r.split(","); seen.setdefault(u, set()).add(i)
    with ServerProcess(str(models)) as srv:
        r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": "user_007", "k": 5}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json(); got = [a["artist_id"] for a in body["items"]]
        assert body["path"] == "personalized" and body["user_id"] == "user_007" and len(got) == 5
        assert all(isinstance(a, str) and a.startswith("track/") for a in got) and not set(got) & seen["user_007"]
        r = httpx.post(srv.url + "/v1/recommendations", json={"recent_artist_ids": ["track/03", "no-such-track"], "k": 3,
                                                              "filters": {"exclude_artist_ids": [got[0]]}}, timeout=30).json()
        assert r["unknown_artist_ids"] == ["no-such-track"] and got[0] not in [a["artist_id"] for a in r["items"]]
        r = httpx.post(srv.url + "/v1/rank", json={"user_id": "user_007", "candidate_ids": ["track/01", "track/02", "x"]}, timeout=30).json()
        assert sorted(a["artist_id"] for a in r["items"]) == ["track/01", "track/02"] and r["unknown_candidate_ids"] == ["x"]
        s = httpx.get(srv.url + "/v1/artists/track%2F05/similar", timeout=30)
        assert s.status_code == 200 and s.json()["artist_id"] == "track/05" and s.json()["items"], s.text
        assert httpx.get(srv.url + "/v1/artists/nope/similar", timeout=30).status_code == 404
        assert httpx.post(srv.url + "/v1/recommendations", json={"user_id": "someone-new", "k": 3}, timeout=30).json()["path"] == "cold_start"


def test_a_string_id_sent_to_an_integer_bundle_is_a_clear_422(tmp_path):
    src = _movielens_like(tmp_path, n_users=60, n_items=80)
    card = tmp_path / "m.toml"
    run_cli("data", "card", src, "--out", card)
    run_cli("serve", "build-artifacts", "--dataset", card, "--out", tmp_path / "models", "--retrievers", "itemknn", "--version", "i1")
    with ServerProcess(str(tmp_path / "models")) as srv:
        r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": "7", "k": 3}, timeout=30)
        assert r.status_code == 422 and r.json()["field"] == "body.user_id" and "serves integer ids" in r.json()["message"], r.text
        r = httpx.post(srv.url + "/v1/rank", json={"user_id": 7, "candidate_ids": [17, "x"]}, timeout=30)
        assert r.status_code == 422 and r.json()["field"] == "body.candidate_ids.1"
        assert httpx.get(srv.url + "/v1/artists/abc/similar", timeout=30).status_code == 422
        assert httpx.get(srv.url + "/v1/artists/17/similar", timeout=30).status_code == 200


def test_a_ranker_trained_on_a_card_serves_its_stack(tmp_path):
    "`musicml train --model ranker --dataset CARD`, then `serve build-artifacts --dataset CARD --ranker`: the trained stack serves the card's items."
    src = _movielens_like(tmp_path, n_users=150, n_items=120)        # more users than items: EASE solves item-side
    card = tmp_path / "movies.toml"
    run_cli("data", "card", src, "--out", card)
    card.write_text(card.read_text() + '\n[items]\npath = "movies.csv"\nid = "movieId"\nname = "title"\nfeatures = {"genres" = "|"}\n')
    run_cli("train", "--model", "ranker", "--dataset", card, "--out", tmp_path / "ranker", "--epochs", "1", "--no-progress")
    models = tmp_path / "models"
    run_cli("serve", "build-artifacts", "--dataset", card, "--ranker", tmp_path / "ranker" / "model", "--out", models, "--version", "r1")
    man = json.loads((models / "r1" / "manifest.json").read_text())
    assert man["data"]["dataset"] == str(card) and "ndcg@10" in man["data"]["artifacts"]["ranker"]["evaluation"]["test_full"]["metrics"]
    seen = _liked(src)
    with ServerProcess(str(models)) as srv:
        for u in (1, 77, 150):
            r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": u, "k": 5}, timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["path"] == "personalized" and body["models"]["ranker"] == "dcn@r1" and body["models"]["two_tower"] == "two_tower@r1"
            assert body["models"]["ease"] == "ease_items@r1"
            items = {a["artist_id"] for a in body["items"]}
            assert len(items) == 5 and all(a % 10 == 7 for a in items) and not items & seen[u]
        # a wrong card for the artifact is refused before anything is written
        other = tmp_path / "other.toml"
        other.write_text(card.read_text().replace('name = "ratings"', 'name = "someone-else"'))
        p = run_cli("serve", "build-artifacts", "--dataset", other, "--ranker", tmp_path / "ranker" / "model", "--out", tmp_path / "m2", check=False)
        assert p.returncode != 0 and "someone-else" in p.stderr + p.stdout
