"""Model cards: every `musicml train` artifact and serving bundle carries a MODEL_CARD.md rendered from (and recorded in) its
manifest, and `musicml card` prints it. The numbers in the card must be the manifest's, not a second computation."""
import json
import os

import pytest
from conftest import run_cli

from musicml.artifacts import verify_manifest
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.recipes.cards import CARD, PUBLISHED

pytestmark = pytest.mark.timeout(300)


def _num(v) -> str: return f"{v:.4f}"


def test_bundle_card_reports_the_manifest(tmp_path):
    d = build_synthetic_artifacts(tmp_path / "models", version="v1", n_users=200, n_items=400, n_interactions=6000)
    man = verify_manifest(d)
    assert CARD in man["files"]
    card = (d / CARD).read_text()
    off = man["data"]["offline"]
    assert off["results"], "the baseline stages were evaluated on a held-out split"
    for name, r in off["results"].items():                       # each stage's test NDCG@10 appears, to 4 digits
        assert _num(r["metrics"]["ndcg@10"]) in card, name
    for stage in man["stages"]:
        assert f"| {stage} |" in card
    assert man["data"]["reproduce"] in card and "synthetic" in card
    assert run_cli("card", d).stdout == card                     # `musicml card` prints the verified stored card


def test_card_refuses_a_tampered_card_or_a_foreign_directory(tmp_path):
    d = build_synthetic_artifacts(tmp_path / "models", version="v1", n_users=200, n_items=400, n_interactions=6000)
    (d / CARD).write_text((d / CARD).read_text().replace("ndcg", "NDCG"))
    p = run_cli("card", d, check=False)
    assert p.returncode == 2 and "MODEL_CARD.md: sha256 differs" in p.stderr
    p = run_cli("card", tmp_path, check=False)
    assert p.returncode == 2 and "no manifest.json" in p.stderr


@pytest.mark.skipif(not os.environ.get("MUSICML_DATA"), reason="MUSICML_DATA not set")
def test_train_artifact_card_has_metrics_anchors_and_a_working_reproduce_line(tmp_path):
    out = tmp_path / "art"
    run_cli("train", "--model", "sasrec", "--recipe", "reference", "--epochs", "1", "--out", out, "--no-progress",
            "--threads", "1")
    art = out / "model"
    man = verify_manifest(art)
    card = (art / CARD).read_text()
    metrics = json.loads((art / "metrics.json").read_text())
    assert _num(metrics["test_full"]["ndcg@10"]) in card          # the card's headline is the artifact's own test result
    assert man["evaluation"]["test_full"]["metrics"]["ndcg@10"] == metrics["test_full"]["ndcg@10"]
    names = {a["name"] for a in man["anchors"]}
    assert any("popular" in n for n in names), names              # a measured anchor on the same split
    published = PUBLISHED.get("lastfm-2k", {}).get(man["task"], [])  # published points exist only for a task that matches
    assert man["anchors"][1:] == published and "most popular" in card   # their protocol (none for tag sequences)
    assert man["reproduce"].startswith("musicml train --model sasrec --recipe reference") and "--epochs 1" in man["reproduce"]
    assert man["reproduce"] in card and man["protocol"] in card
    assert run_cli("card", art).stdout == card
