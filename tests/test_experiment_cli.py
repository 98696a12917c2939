"""`musicml experiment analyze`: events written by the toolkit, analysed through the argparse entry point
(in a fresh process for the text report, in-process for the rest)."""
import argparse
import json
import subprocess
import sys

import pytest

from musicml.experiment.cli import add_parser
from musicml.experiment.events import EventWriter, read_events, simulate_events

RUN = ("import argparse, sys; from musicml.experiment.cli import add_parser;"
       "ap = argparse.ArgumentParser(prog='musicml'); add_parser(ap.add_subparsers(dest='command'));"
       "a = ap.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def _cli(*args):
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True, timeout=120)


def _main(*args) -> int:
    ap = argparse.ArgumentParser(prog="musicml")
    add_parser(ap.add_subparsers(dest="command"))
    a = ap.parse_args([str(x) for x in args])
    return a.func(a)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    return simulate_events(tmp_path_factory.mktemp("ev") / "events.parquet", n_units=4000, effect=0.1, rho=0.8, seed=3)


def test_text_report(events):
    r = _cli("experiment", "analyze", events)
    assert r.returncode == 0, r.stderr
    for word in ("SRM: ok", "effect", "CI", "p ", "CUPED", "variance -"):
        assert word in r.stdout, r.stdout


def test_json_report(events, capsys):
    assert _main("experiment", "analyze", events, "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    c = rep["comparisons"][0]
    assert rep["control"] == "control" and c["arm"] == "treatment"
    assert c["ci_low"] < 0.1 < c["ci_high"] and c["cuped"]["ci_low"] < 0.1 < c["cuped"]["ci_high"]
    assert abs(c["cuped"]["variance_reduction"] - 0.64) < 0.05   # rho = 0.8


def test_srm_exit_code(events, tmp_path, capsys):
    ev = read_events(events)
    bad = ev[~ev.unit_id.isin(ev[(ev.kind == "exposure") & (ev.arm == "treatment")].unit_id.iloc[::5])]
    with EventWriter(tmp_path / "bad.parquet") as w:
        for row in bad.to_dict("records"):
            w.log({k: v for k, v in row.items() if v is not None and k != "items" and not (isinstance(v, float) and v != v)})
    assert _main("experiment", "analyze", tmp_path / "bad.parquet") == 2
    assert "MISMATCH" in capsys.readouterr().out


def test_errors_name_the_problem(events, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        _main("experiment", "analyze", tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="metric 'minutes' not in the events"):
        _main("experiment", "analyze", events, "--metric", "minutes")
    with pytest.raises(ValueError, match="experiment 'x' not in the events"):
        _main("experiment", "analyze", events, "--experiment", "x")
