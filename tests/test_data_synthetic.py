"""Integration tests of the synthetic data memory benchmark and the fresh-process memory probe."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musicml.bench.memory import ProbeError, measure

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "benchmarks_nbs" / "data_memory.ipynb"


def test_probe_sees_a_known_allocation():
    small = measure("allocate", mb=1)
    big = measure("allocate", mb=200)
    assert big["peak_rss_mb"] >= big["baseline_rss_mb"] + 195, big
    assert big["peak_rss_mb"] >= small["peak_rss_mb"] + 190, (small, big)
    assert not big["torch_imported"] and big["baseline_rss_mb"] < 150, big


def test_probe_ignores_the_parents_memory():
    hog = np.ones(300 * 2**20 // 8)  # 300 MiB held by this (parent) process
    r = measure("allocate", mb=1)
    assert hog.sum() > 0
    assert r["peak_rss_mb"] < 200, r  # the child's own high-water mark, not the parent's (unlike ru_maxrss)


def test_probe_reports_failures():
    with pytest.raises(ProbeError, match="unknown memory task"):
        measure("no_such_task")


def test_data_memory_notebook_small(tmp_path):
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "papermill", str(NB), str(out / "data_memory.ipynb"), "-k", "musicml",
           "-p", "output_dir", str(out), "-p", "synthetic_sizes", "[1000, 100000]", "-p", "repeats", "1"]
    out.mkdir()
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, timeout=600)
    res = json.loads((out / "data_memory.json").read_text())
    assert (out / "data_memory.png").stat().st_size > 0
    assert res["environment"]["numpy"] == np.__version__
    sizes = sorted({r["size"] for r in res["synthetic"]})
    assert sizes == [1000, 100000]
    for r in res["synthetic"]:
        assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0 and r["wall_s"]["median"] > 0
        if r["method"] != "synthetic_generate":
            assert r["result"]["nnz"] > 0 and r["result"]["config"]["dataset"] == "synthetic"
    checks = {c["check"]: c for c in res["checks"]}
    assert all(c["status"] == "SKIP" for k, c in checks.items() if k.startswith("synthetic"))  # 1e7 not run
    lastfm = checks["Last.fm 2K load + CSR"]
    if os.environ.get("MUSICML_DATA"):
        assert res["lastfm"]["result"]["nnz"] == 92834
        assert lastfm["status"] == ("PASS" if lastfm["peak_rss_mb"] < 200 else "FAIL")
    else:
        assert lastfm["status"] == "SKIP" and res["lastfm"] is None
