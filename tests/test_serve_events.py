"""POST /v1/events on the real server (uvicorn on loopback): acknowledged outcome events survive SIGKILL and SIGTERM,
a full queue is a counted 429 (never a 5xx), bad events are 422s naming the field, and `musicml experiment analyze`
reads the exposures and outcomes the service wrote."""
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.experiment.assign import Experiment, Layer
from musicml.experiment.events import read_events
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.loadgen import ServerProcess

EXPERIMENT = "ranker-v2:control=0.5,treatment=0.5"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    build_synthetic_artifacts(d, "v1")
    return d


def _event(user, rid="r1", artist=1, position=1, type="play", **kw):
    return dict(request_id=rid, user_id=int(user), artist_id=int(artist), position=position, type=type,
                ts=datetime.now(timezone.utc).isoformat(), **kw)


def _metrics(url) -> dict:
    "{(sample name, frozenset(labels)): value} of /metrics."
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _poster(url, acked, stop, prefix, errors):
    "Post batches of 20 events until `stop` is set or the server goes away; every acknowledged event id into `acked`."
    with httpx.Client(timeout=10) as c:
        i = 0
        while not stop.is_set():
            batch = [_event(7, rid=f"{prefix}-{i}", artist=j, position=j + 1, event_id=f"{prefix}-{i}-{j}") for j in range(20)]
            try: r = c.post(url + "/v1/events", json=batch)
            except httpx.HTTPError: return                        # the server was killed
            if r.status_code != 202 or r.json()["event_ids"] != [e["event_id"] for e in batch]:
                errors.append(f"{r.status_code} {r.text[:200]}"); return   # never a 5xx, and the queue is not full here
            acked.extend(r.json()["event_ids"]); i += 1


def _until(cond, what, timeout=60):
    t = time.monotonic()
    while not cond():
        assert time.monotonic() - t < timeout, what
        time.sleep(0.05)


def test_acknowledged_events_survive_sigkill_and_sigterm(models, tmp_path):
    out = tmp_path / "outcomes"
    env = {"MUSICML_SERVE_OUTCOME_LOG": str(out), "MUSICML_SERVE_EVENTS_FLUSH_INTERVAL_S": "3600",
           "MUSICML_SERVE_EVENTS_FLUSH_EVERY": "1000000"}           # nothing reaches Parquet before the kill
    srv = ServerProcess(models, env=env, log_path=tmp_path / "server.log").start(wait_ready=False)
    acked, stop, errors = [], threading.Event(), []
    posters = [threading.Thread(target=_poster, args=(srv.url, acked, stop, f"a{k}", errors)) for k in range(4)]
    for t in posters: t.start()
    try:
        _until(lambda: len(acked) >= 2000 or errors, "too few events acknowledged")
        srv.proc.kill(); srv.proc.wait()                          # SIGKILL while the posters are still sending
    finally:
        stop.set()
        for t in posters: t.join(30)
    assert not errors, errors
    n_crash = len(acked)
    assert not list(out.glob("part-*.parquet")) and list((out / "_wal").glob("wal-*.jsonl"))   # only in the log
    srv.start(wait_ready=False)                                   # recovery runs before the port answers
    assert len(read_events(out)) >= n_crash and not list((out / "_wal").glob("wal-*.jsonl"))
    acked_second, stop2 = [], threading.Event()
    t = threading.Thread(target=_poster, args=(srv.url, acked_second, stop2, "b", errors)); t.start()
    _until(lambda: len(acked_second) >= 500 or errors, "too few events acknowledged after the restart")
    stop2.set(); t.join(30)
    assert not errors, errors
    srv.stop()                                                    # SIGTERM: graceful, the log goes into Parquet
    assert srv.proc.returncode == -15                             # (uvicorn re-raises the signal once shut down)
    ev = read_events(out)
    stored = set(ev.event_id)
    assert set(acked) | set(acked_second) <= stored, f"{len(set(acked) - stored)} acknowledged events lost in the crash"
    assert not ev.event_id.duplicated().any()                     # recovery wrote nothing twice
    assert not list((out / "_wal").glob("*.jsonl"))
    row = ev[ev.event_id == acked[0]].iloc[0]
    assert (row.kind, row.metric, row.unit_id, row.value, row.position) == ("outcome", "play", "7", 1.0, 1)


def test_full_queue_is_a_counted_429_and_bad_events_are_422s(models, tmp_path):
    out = tmp_path / "outcomes"
    env = {"MUSICML_SERVE_OUTCOME_LOG": str(out), "MUSICML_SERVE_EVENTS_QUEUE_MAX": "500"}   # one full batch at a time
    with ServerProcess(models, env=env, log_path=tmp_path / "server.log") as srv:
        r = httpx.post(srv.url + "/v1/events", json=[_event(1), {**_event(1), "user_id": "3"}], timeout=10)
        assert r.status_code == 422 and r.json()["field"] == "body.1.user_id", r.text
        assert "serves integer ids" in r.json()["message"]
        r = httpx.post(srv.url + "/v1/events", json=_event(1, type="like"), timeout=10)
        assert r.status_code == 422 and r.json()["field"] == "body.type" and "'play', 'skip' or 'click'" in r.json()["message"]
        r = httpx.post(srv.url + "/v1/events", json=[_event(1)] * 501, timeout=10)
        assert r.status_code == 422 and "1 to 500 events" in r.json()["message"]

        codes, refusals, acked, lock, t0 = [], [], [], threading.Lock(), time.monotonic()
        def flood():
            with httpx.Client(timeout=30) as c:
                while time.monotonic() - t0 < 20 and 429 not in codes:
                    r = c.post(srv.url + "/v1/events", json=[_event(2, artist=j) for j in range(500)])
                    with lock:
                        codes.append(r.status_code)
                        if r.status_code == 202: acked.extend(r.json()["event_ids"])
                        if r.status_code == 429: refusals.append((r.headers.get("retry-after"), r.json()["code"]))
        threads = [threading.Thread(target=flood) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join(60)
        assert set(codes) <= {202, 429}, codes
        assert codes.count(429) > 0, f"the queue never filled in {len(codes)} batches"
        assert set(refusals) == {("1", "too_many_requests")}, refusals
        m = _metrics(srv.url)
        assert m[("musicml_events_dropped_total", frozenset({("reason", "queue_full")}))] == 500 * codes.count(429)
        assert m[("musicml_events_total", frozenset({("type", "play")}))] == len(acked)
        assert m[("musicml_events_queue_depth", frozenset())] == 0
    assert set(acked) == set(read_events(out).event_id)             # the refused batches stored nothing


def test_analyze_reads_what_the_service_logged(models, tmp_path):
    expo, out = tmp_path / "exposures", tmp_path / "outcomes"
    users = [int(u) for u in load_arrays(models / "v1" / "catalog.npz")["user_ids"][:60]]
    env = {"MUSICML_SERVE_EXPERIMENT": EXPERIMENT, "MUSICML_SERVE_EXPOSURE_LOG": str(expo), "MUSICML_SERVE_OUTCOME_LOG": str(out)}
    layer, plays = Layer("serve", [Experiment("ranker-v2")]), {"control": [], "treatment": []}
    with ServerProcess(models, env=env, log_path=tmp_path / "server.log") as srv:
        for u in users:
            body = httpx.post(srv.url + "/v1/recommendations", json={"user_id": u, "k": 5}, timeout=10).json()
            top = body["items"][0]
            n = (2 if layer.assign(u).arm == "treatment" else 1) + u % 2   # treatment users play one more
            plays[layer.assign(u).arm].append(n)
            ev = [_event(u, body["request_id"], top["artist_id"], 1, event_id=f"{body['request_id']}-{i}") for i in range(n)]
            ev.append(_event(u, body["request_id"], body["items"][1]["artist_id"], 2, type="skip"))
            assert httpx.post(srv.url + "/v1/events", json=ev, timeout=10).status_code == 202
            assert httpx.post(srv.url + "/v1/events", json=ev[0], timeout=10).status_code == 202   # a client retry
        assert httpx.post(srv.url + "/v1/events", json=_event(users[0], "never-served"), timeout=10).status_code == 202
    run = ("import argparse, sys; from musicml.experiment.cli import add_parser;"
           "ap = argparse.ArgumentParser(prog='musicml'); add_parser(ap.add_subparsers(dest='command'));"
           "a = ap.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    r = subprocess.run([sys.executable, "-c", run, "experiment", "analyze", str(expo), str(out), "--metric", "play", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    mean = {a: sum(v) / len(v) for a, v in plays.items()}
    assert rep["control_mean"] == pytest.approx(mean["control"]), rep              # retries counted once
    assert rep["comparisons"][0]["mean"] == pytest.approx(mean["treatment"]), rep
    assert rep["comparisons"][0]["effect"] == pytest.approx(mean["treatment"] - mean["control"])
    n = rep["notes"]
    assert n["n_units"] == len(users) and n["duplicate_outcomes"] == len(users) and n["unattributed_outcomes"] == 1, n
    assert n["attributed_outcomes"] == sum(map(sum, plays.values())) + len(users)   # the plays and one skip each
