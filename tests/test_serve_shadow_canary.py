"""Shadow scoring and canaries on the real server (issue 19, items 2 and 3): a shadow alias scores every sampled answer
off the response path, the answers stay what the service gives with no shadow, and the logged and exported overlap is
what scoring both bundles offline gives; a broken canary (its requests fail at ranking) is rolled back within its window
with no 5xx to any client, its traffic returns to champion and the rollback is persisted, counted and logged, while a
healthy canary under the same traffic is not rolled back. The p99 cost of the shadow is measured in
benchmarks_nbs/serving_load.ipynb ("Shadow scoring"); the guard here is loose."""
import json
import random
import threading
import time

import httpx
from conftest import offline_answers
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.loadgen import ServerProcess

TOKEN = {"x-admin-token": "s3cret"}
SHADOW = """
[shadow]
alias = "challenger"
share = 1.0
log_share = 1.0

[aliases]
challenger = "v1"
"""
CANARY = """
[canary]
alias = "canary"
share = 0.5
window_s = 20
min_requests = 20
max_error_rate = 0.05
max_fallback_rate = 0.2
max_p99_ms = 1000
check_interval_s = 0.25

[aliases]
canary = "v2"
"""


def _models(root):
    "v1 (ItemKNN), v2 (ALS), v3 (both: champion, the newest) on one synthetic catalogue."
    models = root / "models"
    for v, retr in (("v1", ("itemknn",)), ("v2", ("als",)), ("v3", ("itemknn", "als"))):
        build_synthetic_artifacts(models, v, n_users=120, n_items=300, n_interactions=4000, seed=0, retrievers=retr)
    return models


def _users(models):
    return [int(u) for u in load_arrays(models / "v1" / "catalog.npz")["user_ids"]]


def _metrics(url) -> dict:
    "{(name, labels...): value} of the exposition."
    out = {}
    for f in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in f.samples: out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def _value(url, name, **labels) -> float:
    return _metrics(url).get((name, *sorted(labels.items())), 0.0)


def _answer(body) -> dict:
    return {a["artist_id"]: a["score"] for a in body["items"]}


def _compare(live: dict, shadow: dict) -> dict:
    "overlap@k and mean |score difference| over the shared artists, written out here (not the service's code)."
    shared = set(live) & set(shadow)
    return {"k": len(live), "shared": len(shared), "overlap": len(shared) / len(live),
            "score_diff": sum(abs(live[a] - shadow[a]) for a in shared) / len(shared) if shared else None}


def _log_events(path, event) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try: d = json.loads(line)
        except ValueError: continue
        if d.get("event") == event: out.append(d)
    return out


def test_shadow_scores_off_the_response_path_and_measures_the_difference(tmp_path):
    models = _models(tmp_path); cfg = tmp_path / "shadow.toml"; cfg.write_text(SHADOW)
    bodies = [{"user_id": u, "k": 10} for u in _users(models)[:40]] + [
        {"user_id": 10**9, "k": 5}, {"recent_artist_ids": [1, 2, 3], "k": 10, "diversity": 0.0},
        {"user_id": _users(models)[0], "k": 20, "exclude_seen": False, "filters": {"exclude_artist_ids": [1, 2]}}]
    log = tmp_path / "server.log"
    with ServerProcess(models, env={"MUSICML_SERVE_EXPERIMENT_CONFIG": str(cfg), "MUSICML_SERVE_MAX_WAIT_MS": "1"},
                       log_path=log) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            live = [c.post("/v1/recommendations", json=b) for b in bodies]
        assert all(r.status_code == 200 for r in live), [r.text for r in live if r.status_code != 200][:3]
        live = [r.json() for r in live]
        for _ in range(200):                                         # the shadow scores after the answers went out
            if _value(srv.url, "musicml_shadow_requests_total", alias="challenger") >= len(bodies): break
            time.sleep(0.05)
        m = _metrics(srv.url)
        listing = httpx.get(srv.url + "/admin/aliases").json()
    offline = {v: offline_answers(models / v, bodies) for v in ("v1", "v3")}
    # the live answers are what the service answers without a shadow (champion v3), item for item and score for score
    for got, want in zip(live, offline["v3"]):
        assert (got["model_version"], got["model_alias"], _answer(got)) == ("v3", "champion", _answer(want))
    # every answer was compared; the overlap and score difference are what scoring both bundles offline gives
    want = {b["request_id"]: _compare(_answer(w3), _answer(w1)) for b, w3, w1 in zip(live, offline["v3"], offline["v1"])}
    logged = {d["request_id"]: d for d in _log_events(log, "shadow_compared")}
    assert set(logged) == set(want)
    for rid, w in want.items():
        d = logged[rid]
        assert (d["alias"], d["version"], d["live_version"], d["k"], d["shared"]) == ("challenger", "v1", "v3", w["k"], w["shared"])
        assert abs(d["overlap"] - w["overlap"]) < 1e-9
        assert (d["score_diff"] is None) == (w["score_diff"] is None) and (w["score_diff"] is None or abs(d["score_diff"] - w["score_diff"]) < 1e-6)
    overlaps = [w["overlap"] for w in want.values()]
    assert 0 < sum(overlaps) < len(overlaps) and len(set(overlaps)) > 1       # the two versions differ, by request
    key = lambda name, **lab: (name, *sorted({"alias": "challenger", **lab}.items()))
    assert m[key("musicml_shadow_requests_total")] == len(bodies) and m[key("musicml_shadow_overlap_count")] == len(bodies)
    assert abs(m[key("musicml_shadow_overlap_sum")] - sum(overlaps)) < 1e-6
    diffs = [w["score_diff"] for w in want.values() if w["score_diff"] is not None]
    assert m[key("musicml_shadow_score_diff_count")] == len(diffs) and abs(m[key("musicml_shadow_score_diff_sum")] - sum(diffs)) < 1e-4
    assert all(m[key("musicml_shadow_dropped_total", reason=r)] == 0 for r in ("queue_full", "busy", "not_loaded"))
    assert m[key("musicml_shadow_errors_total")] == 0
    assert listing["shadow"]["alias"] == "challenger" and listing["shadow"]["version"] == "v1" and listing["shadow"]["compared"] == len(bodies)


def _hammer(url, users, stop, log, n=3):
    def run(seed):
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                u, t0 = rng.choice(users), time.monotonic()
                r = c.post("/v1/recommendations", json={"user_id": u, "k": 10})
                b = r.json() if r.status_code == 200 else {}
                log.append((t0, r.status_code, b.get("model_alias"), b.get("model_version"), tuple(b.get("degraded_reasons", ()))))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    return threads


def test_a_broken_canary_is_rolled_back_by_itself_and_a_healthy_one_is_not(tmp_path):
    models = _models(tmp_path); cfg = tmp_path / "canary.toml"; cfg.write_text(CANARY)
    users, log_path = _users(models), tmp_path / "server.log"
    env = {"MUSICML_SERVE_EXPERIMENT_CONFIG": str(cfg), "MUSICML_SERVE_ADMIN_TOKEN": "s3cret", "MUSICML_SERVE_MAX_WAIT_MS": "1",
           "MUSICML_SERVE_FAULTS": "rank:error@v2"}                  # v2 is broken: every request it ranks fails (a drill)
    rolled = lambda url, reason="error_rate": _value(url, "musicml_canary_rollbacks_total", alias="canary", reason=reason)
    with ServerProcess(models, env=env, log_path=log_path) as srv:
        assert httpx.get(srv.url + "/admin/aliases", headers=TOKEN).json()["canary"]["state"] == "active"
        log, stop = [], threading.Event()
        threads = _hammer(srv.url, users, stop, log)
        try:
            for _ in range(400):
                if rolled(srv.url): break
                time.sleep(0.05)
            t_rb = time.monotonic()
            time.sleep(1.5)                                          # traffic after the rollback
        finally:
            stop.set()
            for t in threads: t.join()
        listing = httpx.get(srv.url + "/admin/aliases", headers=TOKEN).json()["canary"]
        active_after_rb = _value(srv.url, "musicml_canary_active", alias="canary")
        rec = json.loads((models / "CANARY").read_text())["canary"]    # persisted: every process and a restart follow it
        # a healthy version under the same traffic: pinned to the canary alias, it takes its share again and stays
        r = httpx.post(srv.url + "/admin/aliases/canary", json={"version": "v1"}, headers=TOKEN, timeout=60)
        assert r.status_code == 200 and r.json()["version"] == "v1", r.text
        healthy, stop = [], threading.Event()
        threads = _hammer(srv.url, users, stop, healthy)
        try: time.sleep(6)
        finally:
            stop.set()
            for t in threads: t.join()
        time.sleep(0.5)                                              # one more check of the window
        healthy_listing = httpx.get(srv.url + "/admin/aliases", headers=TOKEN).json()["canary"]
        total = sum(rolled(srv.url, r) for r in ("error_rate", "fallback_rate", "p99"))
        assert httpx.post(srv.url + "/admin/canary/resume").status_code == 403      # the admin token is needed
        resumed = httpx.post(srv.url + "/admin/canary/resume", headers=TOKEN).json()
    # the broken canary: served its share, degraded (never a 5xx), then rolled back within its window
    canary = [x for x in log if x[2] == "canary"]
    print(f"\nbroken canary: {len(log)} requests, {len(canary)} by the canary before the rollback; healthy: {len(healthy)} requests, "
          f"{sum(x[2] == 'canary' for x in healthy)} by the canary")
    assert [x for x in log + healthy if x[1] != 200] == []
    assert len(canary) >= 20 and all(x[3] == "v2" and x[4] == ("rank:error",) for x in canary)
    assert all(x[4] == () for x in log if x[2] == "champion")          # champion, in the same micro-batches, unharmed
    assert t_rb - canary[0][0] < 20                                    # within the window
    after = [x for x in log if x[0] > t_rb]
    assert len(after) > 20 and {(x[2], x[3]) for x in after} == {("champion", "v3")}   # its traffic is back on champion
    assert listing["state"] == "rolled_back" and listing["rolled_back"]["reason"] == "error_rate" and active_after_rb == 0
    assert listing["rolled_back"]["version"] == "v2" and listing["rolled_back"]["window"]["requests"] >= 20
    assert (rec["version"], rec["reason"], rec["replaces"]) == ("v2", "error_rate", "champion")
    events = _log_events(log_path, "canary_rolled_back")
    assert len(events) == 1 and events[0]["reason"] == "error_rate" and events[0]["version"] == "v2"
    # the healthy canary: took its share under the same traffic and was never rolled back
    ok = [x for x in healthy if x[2] == "canary"]
    assert len(ok) >= 100 and all(x[3] == "v1" and x[4] == () for x in ok)
    assert 0.3 < len(ok) / len(healthy) < 0.7                         # about its share (0.5) of champion's users
    assert total == 1 and healthy_listing["state"] == "active" and healthy_listing["window"]["requests"] >= 20
    assert resumed["status"] == "resumed" and resumed["state"] == "active" and "canary" not in json.loads((models / "CANARY").read_text())
