"""The benchmark dashboard (`musicml.bench.dashboard`, written by ci/report.sh) built from a real report and opened in
headless Chromium (Debian's package; ci/test.sh installs it, the browser tests skip without it): the screenshot is not
blank, every plot loaded, every section is listed, and a broken plot path is caught."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from musicml.bench.dashboard import SECTIONS, build_dashboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (ci/test.sh installs Debian's package)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2000"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    "A reports/ tree holding one real report (data_memory with tiny sizes, quick profile) and the run record."
    root = tmp_path_factory.mktemp("reports")
    out = root / "data_memory"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "benchmarks_nbs/data_memory.ipynb"), str(out / "data_memory.ipynb"),
                    "-k", "musicml", "--no-progress-bar", "-p", "output_dir", str(out), "-p", "synthetic_sizes", "[1000, 10000]",
                    "-p", "repeats", "1", "-p", "profile", "quick"], check=True, cwd=root, capture_output=True, timeout=600)
    (root / "run.json").write_text(json.dumps(dict(profile="quick", wall_s=60, sections={"data_memory": dict(wall_s=20, ok=True)})))
    build_dashboard(root)
    return root


def _open(page, tmp_path):
    "Screenshot of `page` as a grayscale array, and its DOM after load (the page's script has checked its images)."
    png = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--screenshot={png}", page.as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([CHROMIUM, *FLAGS, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    status = re.search(r'<p id="img-status"[^>]*>', dom)
    assert status, "the page's image check did not run"
    count = {k: int(re.search(rf'data-{k}="(\d+)"', status.group(0)).group(1)) for k in ("loaded", "broken")}
    return np.asarray(Image.open(png).convert("L"), dtype=float), dom, count


@pytest.mark.slow
def test_summary_holds_every_section(reports):
    s = json.loads((reports / "summary.json").read_text())
    rows = {r["section"]: r for r in s["sections"]}
    assert list(rows) == [sec[0] for sec in SECTIONS] and s["profile"] == "quick"
    dm = rows["data_memory"]
    real = json.loads((reports / "data_memory/data_memory.json").read_text())
    assert dm["status"] == "ok" and dm["profile"] == "quick" == real["profile"] and dm["plots"] == ["data_memory/data_memory.png"]
    assert dm["value"] == (real["lastfm"] or {}).get("peak_rss_mb") and dm["environment"]["git_commit"] == real["environment"]["git_commit"]
    assert dm["passed"] is (None if all(c["status"] == "SKIP" for c in real["checks"]) else real["passed"])
    assert all(r["status"] == "missing" for k, r in rows.items() if k != "data_memory")


@pytest.mark.slow
@needs_chromium
def test_dashboard_renders_with_its_images(reports, tmp_path):
    img, dom, count = _open(reports / "index.html", tmp_path)
    assert img.shape == (2000, 1280)
    assert img.std() > 20 and (img < 200).mean() > 0.02, "the screenshot is (nearly) blank"
    assert img[:400].std() > 20, "nothing drawn at the top of the page (banner and headline table)"
    assert count == {"loaded": 1, "broken": 0}
    assert "profile: quick — small budgets" in dom and all(title in dom for _, _, title, _, _ in SECTIONS)
    assert dom.index('id="headlines"') < dom.index('id="environment"') < dom.index('id="data_memory"')


@pytest.mark.slow
@needs_chromium
def test_broken_plot_is_caught(reports, tmp_path):
    "The check can fail: the same page with its plot gone reports it broken."
    broken = tmp_path / "reports"
    shutil.copytree(reports, broken)
    (broken / "data_memory/data_memory.png").unlink()
    _, dom, count = _open(broken / "index.html", tmp_path)
    assert count == {"loaded": 0, "broken": 1} and "broken: data_memory/data_memory.png" in dom
