"""Hash assignment: stable across processes (and hash seeds), pinned to the documented formula, uniform over 1,000,000 ids."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
from scipy import stats

from musicml.experiment.assign import Experiment, Layer, bucket, buckets


# Computed once from the documented formula, int.from_bytes(sha256(f"{salt}:{unit}").digest()[:8], "big") % n,
# and pinned here: if the implementation drifts, every running experiment would reshuffle its users.
def _formula(unit, salt, n):
    return int.from_bytes(hashlib.sha256(f"{salt}:{unit}".encode()).digest()[:8], "big") % n


PINNED = [("ranker-v2", "user-1", 10_000, 7109), ("ranker-v2", "user-2", 10_000, 2192), ("ui", 12345, 100, 49),
          ("global-holdout", "abc", 1000, 597)]


def test_pinned_values_match_formula():
    for salt, unit, n, want in PINNED:
        assert _formula(unit, salt, n) == want, (salt, unit, n)
        assert bucket(unit, salt, n) == want


def test_stable_across_processes_and_hash_seeds():
    code = ("import json; from musicml.experiment.assign import bucket, Layer, Experiment;"
            "L = Layer('ranking', [Experiment('r2', traffic=0.5)]);"
            "print(json.dumps([[bucket(u, s, n) for s, u, n, _ in %r], [str(L.assign(f'u{i}')) for i in range(50)]]))" % (PINNED,))
    outs = []
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0][0] == [w for *_, w in PINNED]
    L = Layer("ranking", [Experiment("r2", traffic=0.5)])
    assert outs[0][1] == [str(L.assign(f"u{i}")) for i in range(50)]


def test_no_builtin_hash_in_assignment():
    import inspect

    import musicml.experiment.assign as m
    src = inspect.getsource(m)
    assert "hash(" not in src.replace("hashlib", "")


def test_uniform_over_a_million_ids():
    b = buckets((f"user-{i}" for i in range(1_000_000)), "uniformity", 1000)
    p = stats.chisquare(np.bincount(b, minlength=1000)).pvalue
    assert p > 1e-3, p


def test_formula_same_in_other_interpreters():
    "The formula only needs hashlib: every Python interpreter found gives the pinned buckets (here 3.11.x builds)."
    import glob
    import shutil
    pys = {os.path.realpath(p) for p in [sys.executable, shutil.which("python3") or "", *glob.glob("/usr/bin/python3.*")]
           if p and os.path.isfile(p) and os.access(p, os.X_OK) and not p.endswith("-config")}
    code = ("import hashlib, json, sys; f = lambda u, s, n: int.from_bytes(hashlib.sha256(f'{s}:{u}'.encode()).digest()[:8], 'big') % n;"
            "print(json.dumps([f(u, s, n) for s, u, n in json.loads(sys.argv[1])]))")
    args = json.dumps([[s, u, n] for s, u, n, _ in PINNED])
    for py in sorted(pys):
        r = subprocess.run([py, "-I", "-c", code, args], capture_output=True, text=True, check=True)
        assert json.loads(r.stdout) == [w for *_, w in PINNED], py
