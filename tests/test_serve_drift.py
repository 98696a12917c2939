"""Drift and data quality on the real server (issue 19, item 5): requests from the training distribution give low PSI
against the reference the bundle stores; a shifted stream (cold users, unknown artists in histories, rank candidates and
outcome events) gives high PSI, and every exported rate and PSI is what the responses give offline. A bundle built
before drift monitoring still loads and says it has no reference."""
import json
import time

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays, write_manifest
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.drift import DRIFT_FILE, HISTORY_CUTS, popularity_deciles, psi
from musicml.serve.loadgen import ServerProcess
from musicml.serve.registry import load_bundle


def _metrics(url) -> dict:
    out = {}
    for f in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in f.samples: out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def _get(m, name, **labels):
    return m.get((name, *sorted(labels.items())))


class Offline:
    "The drift window recomputed from the responses the client got (not the service's code)."
    def __init__(self, b):
        self.b, self.ref, self.dec = b, b.drift, popularity_deciles(b.popularity)
        self.hist, self.score = np.zeros(len(HISTORY_CUTS) + 1), np.zeros(len(b.drift["score_cuts"]) + 1)
        self.decile, self.users, self.unknown_users, self.artists, self.unknown_artists = np.zeros(10), 0, 0, 0, 0

    def recommendation(self, body, resp):
        b, u = self.b, body.get("user_id")
        if u is not None: self.users += 1; self.unknown_users += u not in b.user_index
        recent = body.get("recent_artist_ids")
        if recent:
            known = {b.item_index[a] for a in recent if a in b.item_index}
            self.artists += len(recent); self.unknown_artists += sum(a not in b.item_index for a in recent); n = len(known)
        else:
            i = b.user_index.get(u, -1); n = int(b.seen.indptr[i + 1] - b.seen.indptr[i]) if i >= 0 else 0
        self.hist[np.searchsorted(HISTORY_CUTS, n, side="right")] += 1
        if resp["path"] == "personalized" and not resp["degraded"] and resp["items"]:
            self.score[np.searchsorted(self.ref["score_cuts"], resp["items"][0]["score"], side="right")] += 1
        for a in resp["items"]: self.decile[self.dec[b.item_index[a["artist_id"]]]] += 1

    def psi(self) -> dict:
        return {s: psi(self.ref[s], c) for s, c in (("history_length", self.hist), ("top_score", self.score),
                                                     ("popularity_decile", self.decile))}


def test_drift_psi_and_unknown_rates_on_the_real_server(tmp_path):
    models = tmp_path / "models"
    build_synthetic_artifacts(models, "v1", n_users=120, n_items=300, n_interactions=4000, seed=0, retrievers=("itemknn", "als"))
    b = load_bundle(models / "v1")
    assert b.drift is not None and b.manifest["drift"] == DRIFT_FILE and DRIFT_FILE in b.manifest["files"]
    users, items = [int(u) for u in b.user_ids], [int(a) for a in b.item_ids]
    off = Offline(b)
    env = {"MUSICML_SERVE_DRIFT_MIN_REQUESTS": "20", "MUSICML_SERVE_DRIFT_INTERVAL_S": "0",
           "MUSICML_SERVE_OUTCOME_LOG": str(tmp_path / "outcomes"), "MUSICML_SERVE_MAX_WAIT_MS": "1"}
    with ServerProcess(models, env=env) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for u in users:                                              # the training distribution: every training user
            body = {"user_id": u, "k": 10}; r = c.post("/v1/recommendations", json=body); assert r.status_code == 200
            off.recommendation(body, r.json())
        m, want = _metrics(srv.url), off.psi()
        got = {s: _get(m, "musicml_drift_psi", version="v1", signal=s) for s in want}
        print("\ntraining traffic PSI:", got); got_before = got
        assert all(abs(got[s] - want[s]) < 1e-6 for s in want), (got, want)
        assert got["history_length"] < 1e-6 and all(v < 0.1 for v in got.values())
        assert _get(m, "musicml_drift_reference", version="v1") == 1
        assert _get(m, "musicml_drift_window", version="v1", signal="unknown_user_rate") == 0
        # shifted: cold users, histories of long-tail artists with unknown ids, rank candidates and events off the catalogue
        tail = [items[i] for i in b.pop_order[-60:]]
        bodies = [{"user_id": 10**6 + i, "k": 10} for i in range(150)] + [
            {"recent_artist_ids": tail[i % 50:i % 50 + 5] + [10**7 + i], "k": 10} for i in range(40)]
        for body in bodies:
            r = c.post("/v1/recommendations", json=body); assert r.status_code == 200, r.text
            off.recommendation(body, r.json())
        rid = r.json()["request_id"]
        for i in range(10):
            cands = items[:8] + [10**7 + i, 10**7 + 100 + i]
            r = c.post("/v1/rank", json={"user_id": users[i], "candidate_ids": cands}); assert r.status_code == 200
            off.users += 1; off.artists += 10; off.unknown_artists += 2
        ev = [{"request_id": rid, "user_id": 5, "artist_id": a, "position": 1, "type": "play", "ts": time.time()}
              for a in (items[0], items[1], 10**7, 10**7 + 1)]
        assert c.post("/v1/events", json=ev).status_code == 202
        off.artists += 4; off.unknown_artists += 2
        m, want = _metrics(srv.url), off.psi()
    got = {s: _get(m, "musicml_drift_psi", version="v1", signal=s) for s in want}
    print("shifted traffic PSI:", got)
    assert all(abs(got[s] - want[s]) < 1e-6 for s in want), (got, want)
    assert got["history_length"] > 0.2 and got["popularity_decile"] > 0.1 and got["popularity_decile"] > 10 * got_before["popularity_decile"]
    w = lambda s: _get(m, "musicml_drift_window", version="v1", signal=s)
    assert abs(w("unknown_user_rate") - off.unknown_users / off.users) < 1e-9 and off.unknown_users == 150
    assert abs(w("unknown_artist_rate") - off.unknown_artists / off.artists) < 1e-9
    assert _get(m, "musicml_drift_unknown_users_total", version="v1") == 150
    assert _get(m, "musicml_drift_user_requests_total", version="v1") == len(users) + 150 + 10
    for src, n, unk in (("history", 240, 40), ("candidates", 100, 20), ("events", 4, 2)):
        assert (_get(m, "musicml_drift_artists_total", version="v1", source=src),
                _get(m, "musicml_drift_unknown_artists_total", version="v1", source=src)) == (n, unk), src
    assert _get(m, "musicml_drift_history_length_count", version="v1") == len(users) + len(bodies)


def test_a_bundle_without_a_reference_loads_and_says_so(tmp_path):
    models = tmp_path / "models"
    d = build_synthetic_artifacts(models, "v1", n_users=60, n_items=150, n_interactions=1500, seed=1, retrievers=("itemknn",))
    man = json.loads((d / "manifest.json").read_text())
    (d / DRIFT_FILE).unlink(); del man["drift"]; man.pop("files")   # as built before drift monitoring
    write_manifest(d, **man)
    assert load_bundle(d).drift is None and "drift" not in load_arrays(d / "catalog.npz")
    users = [int(u) for u in load_bundle(d).user_ids]
    with ServerProcess(models, env={"MUSICML_SERVE_DRIFT_MIN_REQUESTS": "1"}) as srv, httpx.Client(base_url=srv.url) as c:
        for u in users[:30] + [10**6]: assert c.post("/v1/recommendations", json={"user_id": u}).status_code == 200
        m = _metrics(srv.url)
    assert _get(m, "musicml_drift_reference", version="v1") == 0
    assert not [k for k in m if k[0] == "musicml_drift_psi"]       # no reference: no PSI
    assert abs(_get(m, "musicml_drift_window", version="v1", signal="unknown_user_rate") - 1 / 31) < 1e-9
