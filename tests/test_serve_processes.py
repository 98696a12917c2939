"""`musicml serve --processes 2`: two service processes on one port read as one service (merged metrics, readiness of
both), survive a hot reload under load with zero failed requests, and both end up on the new version."""
import asyncio
import os
import shutil
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.recipes.bundles import build_synthetic_trained_artifacts
from musicml.serve.loadgen import ServerProcess, open_loop, request_mix


def _families(url):
    return {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}


def _versions(url) -> dict:
    "pid -> the version whose musicml_model_info is 1."
    return {s.labels["pid"]: s.labels["version"] for s in _families(url)["musicml_model_info"].samples if s.value == 1}


def test_two_processes_one_service(tmp_path):
    models, staging = tmp_path / "models", tmp_path / "staging"
    v1 = build_synthetic_trained_artifacts(models, "v1", n_users=150, n_items=400, n_interactions=6000, epochs=1, seed=0)
    v2 = build_synthetic_trained_artifacts(staging, "v2", n_users=150, n_items=400, n_interactions=6000, epochs=1, seed=1)
    cat = load_arrays(v1 / "catalog.npz")
    events = {}
    with ServerProcess(models, args=("--processes", "2"), env={"MUSICML_SERVE_MAX_WAIT_MS": "1"},
                       log_path=tmp_path / "server.log") as srv:
        ready = httpx.get(srv.url + "/readyz")                # ServerProcess waited for 200: both processes loaded
        assert ready.status_code == 200 and ready.json()["model_version"] == "v1"
        fams = _families(srv.url)
        pids = {s.labels["pid"] for s in fams["musicml_ready"].samples if s.value == 1}
        assert len(pids) == 2 and str(srv.proc.pid) not in pids  # the workers, not the supervisor

        async def drive():
            async with httpx.AsyncClient(timeout=30) as c:
                async def tick(t):
                    if t >= 1.0 and "v2" not in events:
                        events["v2"] = None
                        os.rename(v2, models / "v2")          # publish atomically, then tell one process
                        events["v2"] = (await c.post(srv.url + "/admin/reload")).json()
                return await open_loop(srv.url + "/v1/recommendations", request_mix(cat["user_ids"], cat["item_ids"]),
                                       rps=60, duration_s=5, on_tick=tick)
        s = asyncio.run(drive()).summary()
        assert s["requests"] == 300 and s["errors"] == 0, s
        assert events["v2"]["status"] == "swapped", events
        for _ in range(60):                                   # the other process finds v2 in the directory (every 2 s)
            if set(_versions(srv.url).values()) == {"v2"}: break
            time.sleep(0.2)
        assert sorted(_versions(srv.url)) == sorted(pids) and set(_versions(srv.url).values()) == {"v2"}

        fams = _families(srv.url)                             # counters add up over the processes
        served = sum(x.value for x in fams["musicml_requests"].samples
                     if x.name == "musicml_requests_total" and x.labels["route"] == "/v1/recommendations")
        assert served == 300, served
        swapped = sum(x.value for x in fams["musicml_model_reloads"].samples
                      if x.name == "musicml_model_reloads_total" and x.labels["result"] == "swapped")
        assert swapped == 2                                   # one by the admin call, one by the watcher

        bad = staging / "v3"; shutil.copytree(models / "v2", bad)   # a tampered newer version: refused by both
        raw = bytearray((bad / "ranker.safetensors").read_bytes()); raw[len(raw) // 2] ^= 0xFF
        (bad / "ranker.safetensors").write_bytes(bytes(raw)); os.rename(bad, models / "v3")
        for _ in range(60):
            fam = _families(srv.url).get("musicml_model_load_failures")   # absent until something fails
            fails = sum(x.value for x in fam.samples if x.name.endswith("_total")) if fam else 0
            if fails >= 2: break
            time.sleep(0.2)
        assert fails >= 2 and set(_versions(srv.url).values()) == {"v2"}
        r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": int(cat["user_ids"][0])}).json()
        assert r["model_version"] == "v2" and not r["degraded"]
