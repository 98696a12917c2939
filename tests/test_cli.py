import json
import shutil

from conftest import run_cli


def test_data_info_lastfm(data_dir):
    out = run_cli("data", "info", "lastfm-2k", "--data-dir", data_dir).stdout
    assert "1,892" in out and "17,632" in out and "92,834" in out
    assert "quirk: user_taggedartists.dat: 390 artist ids are not in artists.dat" in out


def test_data_info_musiccaps(data_dir):
    assert "5,521" in run_cli("data", "info", "musiccaps", "--data-dir", data_dir).stdout


def test_data_info_reports_broken_file(data_dir, tmp_path):
    broken = tmp_path / "hetrec2011-lastfm-2k"
    shutil.copytree(data_dir / "hetrec2011-lastfm-2k", broken)
    f = broken / "user_artists.dat"
    f.write_bytes(f.read_bytes().replace(b"2\t52\t11690", b"2\tfifty-two\t11690", 1))
    p = run_cli("data", "info", "lastfm-2k", "--data-dir", tmp_path, check=False)
    assert p.returncode != 0
    assert "user_artists.dat:3: expected a non-negative integer in field 'artistID', got 'fifty-two'" in p.stderr


def test_data_dir_without_files(tmp_path):
    p = run_cli("data", "info", "lastfm-2k", "--data-dir", tmp_path, check=False)
    assert p.returncode != 0 and "no lastfm-2k files found" in p.stderr


def test_evaluate_writes_leaderboard(data_dir, tmp_path):
    out = tmp_path / "lb.json"
    p = run_cli("evaluate", "--dataset", "lastfm-2k", "--models", "pop,itemknn", "--grid", "default",
                "--ks", "5,10,20", "--output", out, "--data-dir", data_dir)
    res = json.loads(out.read_text())
    assert [r["model"] for r in res["leaderboard"]] == ["itemknn", "pop"]
    for m in ("pop", "itemknn"):
        test = res["models"][m]["test"]
        assert {"ndcg@10", "recall@20", "precision@5", "mrr@10", "hr@10", "map@20", "coverage@10"} <= set(test)
        lo, hi = res["models"][m]["ci95"]["ndcg@10"]
        assert lo <= test["ndcg@10"] <= hi
    assert res["environment"]["torch"].startswith("2.13")
    assert res["split"]["train"] + res["split"]["valid"] + res["split"]["test"] == 92834
    assert "itemknn" in p.stdout.splitlines()[2]  # leaderboard table, best first


def test_evaluate_rejects_unknown_model(data_dir):
    p = run_cli("evaluate", "--models", "pop,nope", "--data-dir", data_dir, check=False)
    assert p.returncode != 0 and "unknown models ['nope']" in p.stderr


def test_evaluate_rejects_bad_ks():
    p = run_cli("evaluate", "--ks", "ten", check=False)
    assert p.returncode != 0 and "--ks expects comma-separated integers" in p.stderr
