"Dataset cards (#17): built-in cards reproduce the loaders, a never-seen CSV runs evaluate and train from a drafted card, bad cards and files name the key or file:row:column."
import json
import os

import numpy as np
import pytest
from conftest import run_cli

from musicml.data.cards import CardError, CellError, apply_transforms, draft_card, load_dataset, parse_card
from musicml.data.datasets import DataFormatError


def test_lastfm_card_is_byte_identical_to_the_loader(data_dir):
    from musicml.data.interactions import lastfm_plays, lastfm_tag_sequences
    from musicml.data.lastfm import load_lastfm
    from musicml.data.tasks import load_task
    d = load_lastfm(data_dir)
    for name, ref in (("lastfm-2k", lastfm_plays(d)), ("lastfm-2k-tags", lastfm_tag_sequences(d))):
        got = load_dataset(name, data_dir).interactions
        for k in ("users", "items", "weights", "times", "user_ids", "item_ids"):
            a, b = getattr(got, k), getattr(ref, k)
            assert (a is None and b is None) or (a.dtype == b.dtype and a.tobytes() == b.tobytes()), (name, k)
    _, ref = load_task("plays", data_dir, 0)
    s = load_dataset("lastfm-2k", data_dir).split()
    for part in ("train", "valid", "test"):
        for k in ("users", "items", "weights"):
            assert getattr(getattr(s, part), k).tobytes() == getattr(getattr(ref, part), k).tobytes(), (part, k)


def test_lastfm_card_gives_the_same_leaderboard(data_dir, tmp_path):
    from musicml.data.cards import BUILTIN_CARDS
    from musicml.recipes.leaderboard import run_leaderboard
    card = tmp_path / "lastfm.toml"            # the built-in card as a file, as a user would copy it
    card.write_text(BUILTIN_CARDS["lastfm-2k"])
    a = run_leaderboard("lastfm-2k", ("pop", "itemknn"), grid="default", data_dir=data_dir)
    b = run_leaderboard(str(card), ("pop", "itemknn"), grid="default", data_dir=data_dir)
    for m in ("pop", "itemknn"):
        assert a["models"][m]["test"] == b["models"][m]["test"], m
    assert a["split"] == b["split"]
    assert b["data_card"]["license"].startswith("non-commercial")


def _never_seen(tmp_path, n_users=300, n_items=400, per_user=25, seed=3):
    "A ratings log nobody special-cased: string ids, ratings 1-5, ISO timestamps with offsets, '|' genres, quoted titles."
    rng = np.random.default_rng(seed)
    genres = ["Drama", "Comedy", "Sci-Fi", "Horror", "Romance", "Documentary"]
    item_g = [sorted(set(rng.choice(genres, rng.integers(1, 4)).tolist())) for _ in range(n_items)]
    taste = rng.integers(0, len(genres), n_users)
    pop = rng.zipf(1.6, n_items).astype(float); pop /= pop.sum()
    lines = ["customer_ref;film_code;stars;rated_on;film_title;film_genres"]
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False, p=pop):
            liked = genres[taste[u]] in item_g[i]
            r = int(np.clip(rng.normal(4.2 if liked else 2.6, 0.8), 1, 5))
            t = np.datetime64("2021-03-01T00:00:00") + np.timedelta64(int(rng.integers(0, 3e7)), "s")
            lines.append(f'C-{u:05d};F{i:04d}x;{r};{t}+02:00;"Film ""{i}""";{"|".join(item_g[i])}')
    p = tmp_path / "ratings.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_never_seen_csv_runs_evaluate_and_train_from_a_drafted_card(tmp_path):
    src = _never_seen(tmp_path)
    card = tmp_path / "ratings.toml"
    p = run_cli("data", "card", src, "--out", card)
    text = card.read_text()
    assert "guessed: user = 'customer_ref'" in p.stderr and 'delimiter = ";"' in text and 'timestamp_format = "iso"' in text
    assert 'features = {"film_genres" = "|"}' in text and "rating_threshold = 4" in text
    # the edits docs/datasets.md describes: a licence, the k-core, a random split instead of leave-one-out
    text = text.replace('license = ""', 'license = "CC BY 4.0 (test data)"').replace("# min_user_events = 5", "min_user_events = 3")
    text = text.replace('split = "leave_one_out"', 'split = "random"\nratios = [0.8, 0.1, 0.1]')
    card.write_text(text)
    v = run_cli("data", "validate", card)
    assert "rating_threshold" in v.stdout and "ok:" in v.stdout
    info = run_cli("data", "info", card).stdout
    assert "popularity_gini" in info and "time_span" in info and "2021-" in info
    out = tmp_path / "lb.json"
    e = run_cli("evaluate", "--dataset", card, "--models", "pop,itemknn,ease", "--grid", "default", "--output", out)
    res = json.loads(out.read_text())
    assert res["data_card"]["license"] == "CC BY 4.0 (test data)" and "rating_threshold" in e.stderr
    assert res["models"]["ease"]["test"]["ndcg@10"] > res["models"]["pop"]["test"]["ndcg@10"] > 0
    print(e.stdout)
    pytest.importorskip("torch")
    art = tmp_path / "tt"
    t = run_cli("train", "--model", "two_tower", "--dataset", card, "--out", art, "--epochs", "2", "--no-progress", "--threads", "2")
    assert json.loads(t.stdout.strip().splitlines()[-1])["test_ndcg@10"] > 0
    man = json.loads((art / "model" / "manifest.json").read_text())
    assert man["data_card"]["license"] == "CC BY 4.0 (test data)" and man["dataset"] == str(card)
    assert "--dataset" in man["reproduce"]
    assert "CC BY 4.0 (test data)" in run_cli("card", art / "model").stdout


CARD = 'name = "t"\n[interactions]\npath = "p.csv"\nuser = "u"\nitem = "i"\nweight = "w"\ntimestamp = "ts"\ntimestamp_format = "iso"\n'


def _load(tmp_path, csv_bytes: bytes, card: str = CARD):
    (tmp_path / "p.csv").write_bytes(csv_bytes)
    (tmp_path / "c.toml").write_text(card)
    return load_dataset(str(tmp_path / "c.toml"))


GOOD = b"u,i,w,ts\na,x,1,2024-01-01\nb,y,2,2024-01-02\n"


@pytest.mark.parametrize("card, msg", [
    ("colour = 3\n" + CARD, "c.toml: colour: expected a known top-level key"),
    (CARD.replace("user =", "usr ="), "c.toml: interactions.usr: expected a known key of [interactions] (did you mean 'user'?)"),
    (CARD + "[protocol]\nseed = \"zero\"\n", "c.toml: protocol.seed: expected an integer, got 'zero'"),
    (CARD + "[transforms]\nduplicates = \"max\"\n", "c.toml: transforms.duplicates: expected one of 'sum', 'first'"),
    (CARD.replace('"iso"', '"yesterday"'), "c.toml: interactions.timestamp_format: expected 'unix_s', 'unix_ms', 'iso'"),
    (CARD.replace('path = "p.csv"', 'path = "nope/*.csv"'), "c.toml: interactions.path: expected a file, directory of shards or glob that exists"),
])
def test_bad_cards_name_the_key(tmp_path, card, msg):
    with pytest.raises(CardError) as e: _load(tmp_path, GOOD, card)
    assert msg in str(e.value), str(e.value)


@pytest.mark.parametrize("data, msg", [
    (b"u,item,w,ts\na,x,1,2024-01-01\n", "p.csv:1: expected a column 'i' (named by the card's interactions.item)"),
    (b"u,i,w,ts\na,x,1,2024-01-01\nb,y,lots,2024-01-02\n", "p.csv:3:w: expected a number, got 'lots'"),
    (b"u,i,w,ts\na,x,1,2024-01-01\nb,y,2,2024-02-30\n", "p.csv:3:ts: expected an ISO 8601 date or time"),
    (b"u,i,w,ts\na,x,1,2024-01-01\nb,caf\xe9,2,2024-01-02\n", "p.csv:3:i: expected utf-8 text"),
    (b"u,i,w,ts\na,x,1,2024-01-01\nb,y,2\n", "p.csv:3: expected 4 comma-separated fields (u, i, w, ts), got 3 fields"),
    (b"", "p.csv:1: expected a header line and data rows, got an empty file"),
    (b"u,i,w,ts\n", "p.csv:2: expected data rows after the header"),
    (b"u,i,w,ts\n,x,1,2024-01-01\n", "p.csv:2:u: expected a non-empty id"),
])
def test_bad_files_name_file_row_column(tmp_path, data, msg):
    with pytest.raises(DataFormatError) as e: _load(tmp_path, data)
    assert msg in str(e.value), str(e.value)


def test_bad_input_never_overwrites_outputs(tmp_path):
    (tmp_path / "p.csv").write_bytes(b"u,i,w,ts\na,x,1,2024-01-01\nb,y,2,never\n")
    (tmp_path / "c.toml").write_text(CARD)
    lb, art = tmp_path / "lb.json", tmp_path / "art"
    lb.write_text('{"old": true}'); (art / "model").mkdir(parents=True); (art / "model" / "manifest.json").write_text("{}")
    p = run_cli("evaluate", "--dataset", tmp_path / "c.toml", "--output", lb, check=False)
    assert p.returncode == 2 and "p.csv:3:ts: expected an ISO 8601" in p.stderr and "Traceback" not in p.stderr
    assert lb.read_text() == '{"old": true}'
    p = run_cli("train", "--model", "two_tower", "--dataset", tmp_path / "c.toml", "--out", art, check=False)
    assert p.returncode != 0 and (art / "model" / "manifest.json").read_text() == "{}"
    v = run_cli("data", "validate", tmp_path / "c.toml", check=False)
    assert v.returncode == 2 and "p.csv:3:ts:" in v.stderr
    before = (tmp_path / "c.toml").read_text()
    p = run_cli("data", "card", tmp_path / "p.csv", "--out", tmp_path / "c.toml", check=False)
    assert p.returncode == 2 and "exists; pass --force" in p.stderr and (tmp_path / "c.toml").read_text() == before


def test_transforms_are_reported_and_protocols(tmp_path):
    rows = ["u,i,r,ts"] + [f"u{u},i{(u + j) % 9},{1 + (u * j) % 5},{1_700_000_000 + 3600 * j}" for u in range(30) for j in range(8)]
    rows += ["u0,i0,5,1700000001", "u0,i0,5,1700000002"]      # duplicates
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("u,i,r,ts\nu1,i5,5,1800000000\nu2,i8,4,1800000000\nu999,i1,5,1800000000\nu3,i1,1,1800000000\n")
    card = ('name = "t"\n[interactions]\npath = "p.csv"\nuser = "u"\nitem = "i"\nweight = "r"\ntimestamp = "ts"\n'
            '[transforms]\nrating_threshold = 3\nduplicates = "first"\nmin_user_events = 2\nmin_item_events = 2\n')
    d = _load(tmp_path, (tmp_path / "p.csv").read_bytes(), card + '[protocol]\nsplit = "presplit"\ntest_path = "test.csv"\n')
    steps = {r["step"]: r for r in d.report}
    assert {"rating_threshold", "duplicates", "k_core", "test_unknown"} <= set(steps)
    assert steps["rating_threshold"]["removed"] > 0 and steps["duplicates"]["duplicate_events"] > 0
    s = d.split()
    assert s.method == "presplit" and len(s.test) == 2 and len(s.valid) > 0     # u999 unknown, u3's rating 1 below threshold
    for proto in ('split = "leave_one_out"', 'split = "temporal"', 'split = "random"\nrelevant_min_weight = 1'):
        d = _load(tmp_path, (tmp_path / "p.csv").read_bytes(), card + "[protocol]\n" + proto + "\n")
        assert len(d.split().test) > 0, proto


def test_parquet_directory_and_draft(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    shards = tmp_path / "events"; shards.mkdir()
    for k in range(3):
        pq.write_table(pa.table({"user_id": np.arange(50) + 0, "item_id": (np.arange(50) * (k + 3)) % 40,
                                 "event_ms": 1_700_000_000_000 + np.arange(50) * 1000 + k}), shards / f"part-{k}.parquet")
    text, notes = draft_card(shards)
    assert 'format = "parquet"' in text and 'timestamp_format = "unix_ms"' in text, text
    card = parse_card(text.replace('path = "events"', f'path = "{shards}"'), tmp_path / "c.toml", tmp_path)
    d = load_dataset(card)
    assert len(d.report[0]["files"]) == 3 and d.interactions.times.min() == 1_700_000_000
    assert d.interactions.user_ids.dtype == np.int32


@pytest.mark.skipif(not os.environ.get("MUSICML_DATA"), reason="MUSICML_DATA is not set")
def test_builtin_cards_info(data_dir):
    out = run_cli("data", "info", "lastfm-2k-tags", "--data-dir", data_dir).stdout
    assert "min_time" in out and "time_span" in out
    assert "5,521" in run_cli("data", "info", "musiccaps", "--data-dir", data_dir).stdout
    out = run_cli("data", "validate", "synthetic:5000").stdout
    assert "ok: builtin:synthetic:5000" in out


def _shards(tmp_path, n=3, rows=40):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    d = tmp_path / "shards"; d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        pq.write_table(pa.table({"u": rng.integers(0, 9, rows) * 1000, "i": rng.integers(0, 30, rows) + 10**10, "r": rng.integers(0, 6, rows),
                                 "t": rng.integers(0, 10**6, rows)}), d / f"p{k}.parquet", row_group_size=7)
    card = tmp_path / "c.toml"
    card.write_text('name = "s"\n[interactions]\npath = "shards"\nuser = "u"\nitem = "i"\nweight = "r"\ntimestamp = "t"\n'
                    '[transforms]\nrating_threshold = 2\nduplicates = "last"\n')
    return d, card


def test_streamed_parquet_equals_reading_it_whole(tmp_path):
    "Batches of 5 rows over 3 shards give the arrays, id maps (sorted; int64 items) and report of one in-memory read."
    import pyarrow.parquet as pq
    d, card = _shards(tmp_path)
    t = np.concatenate([np.stack([pq.read_table(f).column(c).to_numpy() for c in "uirt"], 1) for f in sorted(d.glob("*.parquet"))])
    c = parse_card(card.read_text(), card, tmp_path)
    rep = []
    ref = apply_transforms(c, t[:, 0].astype(np.int32), t[:, 1], t[:, 2].astype(float), t[:, 3], rep)
    for batch_rows in (5, 1 << 20):
        got = load_dataset(card, batch_rows=batch_rows)
        for k in ("users", "items", "weights", "times", "user_ids", "item_ids"):
            a, b = getattr(got.interactions, k), getattr(ref, k)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (batch_rows, k)
        assert [(r["step"], r["removed"]) for r in got.report[1:]] == [(r["step"], r["removed"]) for r in rep]
    assert got.interactions.item_ids.dtype == np.int64 and (np.diff(got.interactions.user_ids) > 0).all()


def test_streamed_parquet_null_names_file_row_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    d, card = _shards(tmp_path)
    pq.write_table(pa.table({"u": [1, 2, 3, 4], "i": [1, 2, 3, 4], "r": [3, 3, None, 3], "t": [1, 2, 3, 4]}), d / "p9.parquet", row_group_size=2)
    with pytest.raises(CellError, match=r"p9.parquet:3:r: expected a value, got 'null'"):
        load_dataset(card, batch_rows=2)


@pytest.mark.slow
def test_ray_read_equals_local_read(tmp_path, monkeypatch):
    "load_dataset(..., ray=True) reads the shards with Ray Data: the same bytes as the local stream, and Ray shut down after."
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _, card = _shards(tmp_path)
    a, b = load_dataset(card), load_dataset(card, ray=True, batch_rows=16)
    for k in ("users", "items", "weights", "times", "user_ids", "item_ids"):
        assert getattr(a.interactions, k).tobytes() == getattr(b.interactions, k).tobytes(), k
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evaluate_reads_a_card_through_ray_with_the_same_split(tmp_path):
    "`musicml evaluate --ray` reads the card's Parquet shards with Ray Data: the same split and the same scores as without."
    pytest.importorskip("ray")
    _, card = _shards(tmp_path, rows=60)
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    res, err = {}, {}
    for flag in ((), ("--ray",)):
        out = tmp_path / f"lb{len(flag)}.json"
        err[flag] = run_cli("evaluate", "--models", "pop", "--dataset", card, "--ks", "5,10", "--output", out, *flag, env=env).stderr
        res[flag] = json.loads(out.read_text())
    assert "ReadFilesParquet" in err[("--ray",)] and "ReadFilesParquet" not in err[()]       # Ray Data did the read
    assert res[("--ray",)]["split"] == res[()]["split"] and res[()]["split"]["train"] > 0
    assert res[("--ray",)]["models"]["pop"]["test"] == res[()]["models"]["pop"]["test"]
    assert res[("--ray",)]["data_report"] == res[()]["data_report"]
