"""Hot reload under load: zero failed requests; a tampered version is refused and the old model keeps serving;
bundles whose hashes verify but whose contents make no sense are refused; rollback and pinning never pick a refused one."""
import asyncio
import json
import os
import shutil

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays, save_arrays, write_manifest
from musicml.recipes.bundles import build_synthetic_artifacts, build_synthetic_trained_artifacts
from musicml.serve.loadgen import ServerProcess, open_loop, request_mix


def _metric(url, name, **labels):
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics").text)}
    return sum(s.value for s in fams[name].samples if s.name == name + "_total" and all(s.labels.get(k) == v for k, v in labels.items()))


def test_hot_reload_under_load(tmp_path):
    models, staging = tmp_path / "models", tmp_path / "staging"
    v1 = build_synthetic_trained_artifacts(models, "v1", n_users=200, n_items=600, n_interactions=8000, seed=0)
    v2 = build_synthetic_trained_artifacts(staging, "v2", n_users=200, n_items=600, n_interactions=8000, seed=1)
    cat = load_arrays(v1 / "catalog.npz")
    events = {}
    with ServerProcess(models, env={"MUSICML_SERVE_MAX_WAIT_MS": "1"}, log_path=tmp_path / "server.log") as srv:
        async def drive():
            async with httpx.AsyncClient(timeout=30) as c:
                async def tick(t):
                    if t >= 1.5 and "v2" not in events:
                        events["v2"] = None
                        os.rename(v2, models / "v2")                                  # publish atomically
                        events["v2"] = (await c.post(srv.url + "/admin/reload")).json()
                    elif t >= 3.5 and "v3" not in events:
                        events["v3"] = None
                        bad = staging / "v3"; shutil.copytree(models / "v2", bad)
                        raw = bytearray((bad / "ranker.safetensors").read_bytes()); raw[len(raw) // 2] ^= 0xFF
                        (bad / "ranker.safetensors").write_bytes(bytes(raw))         # same size, different bytes
                        os.rename(bad, models / "v3")
                        r = await c.post(srv.url + "/admin/reload")
                        events["v3"] = {"http": r.status_code, **r.json()}
                return await open_loop(srv.url + "/v1/recommendations", request_mix(cat["user_ids"], cat["item_ids"]),
                                       rps=60, duration_s=6, on_tick=tick)
        res = asyncio.run(drive())
        s = res.summary()
        assert s["requests"] == 360 and s["errors"] == 0, s
        assert events["v2"]["status"] == "swapped" and events["v3"]["http"] == 409, events      # a refusal is not a 200
        assert events["v3"]["code"] == "reload_refused" and "refused v3" in events["v3"]["message"]
        assert "still serving v2" in events["v3"]["message"]
        ready = httpx.get(srv.url + "/readyz").json()
        assert ready["model_version"] == "v2"
        r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": int(cat["user_ids"][0])}).json()
        assert r["model_version"] == "v2" and not r["degraded"]
        assert _metric(srv.url, "musicml_model_load_failures", reason="invalid") == 1
        assert _metric(srv.url, "musicml_model_reloads", result="swapped") == 1
        log = (tmp_path / "server.log").read_text()
        assert "refused model artifact" in log and "sha256 mismatch" in log


def test_watched_directory_swaps_and_refuses_truncated(tmp_path):
    models = tmp_path / "models"
    build_synthetic_artifacts(models, "v1", n_users=50, n_items=200, n_interactions=2000)
    v2 = build_synthetic_artifacts(tmp_path / "staging", "v2", n_users=50, n_items=200, n_interactions=2000, seed=3)
    with ServerProcess(models, env={"MUSICML_SERVE_RELOAD_INTERVAL_S": "0.2"}) as srv:
        shutil.copytree(v2, tmp_path / "staging" / "v9")
        trunc = tmp_path / "staging" / "v9" / "catalog.npz"; trunc.write_bytes(trunc.read_bytes()[:1000])
        os.rename(tmp_path / "staging" / "v9", models / "v9")                 # newest, but truncated
        for _ in range(50):
            if _metric(srv.url, "musicml_model_load_failures") >= 1: break
            asyncio.run(asyncio.sleep(0.1))
        assert httpx.get(srv.url + "/readyz").json()["model_version"] == "v1"
        shutil.rmtree(models / "v9"); os.rename(v2, models / "v2")
        for _ in range(50):
            if httpx.get(srv.url + "/readyz").json()["model_version"] == "v2": break
            asyncio.run(asyncio.sleep(0.1))
        assert httpx.get(srv.url + "/readyz").json()["model_version"] == "v2"
        assert _metric(srv.url, "musicml_model_reloads", result="swapped") >= 1


def _rehashed_copy(src, dst, file, edit):
    "A copy of bundle `src` whose `file` arrays were changed by `edit` and whose manifest was re-hashed to match."
    shutil.copytree(src, dst)
    a = load_arrays(dst / file); edit(a); save_arrays(dst / file, **a)
    m = json.loads((dst / "manifest.json").read_text()); m.pop("files"); m["version"] = dst.name
    write_manifest(dst, **m)
    return dst


def test_rollback_pinning_and_sense_check_on_the_live_service(tmp_path):
    models, staging, token = tmp_path / "models", tmp_path / "staging", {"x-admin-token": "s3cret"}
    for v, seed in (("v1", 0), ("v2", 1)):
        build_synthetic_artifacts(models, v, n_users=50, n_items=200, n_interactions=2000, seed=seed)
    uid = int(load_arrays(models / "v1" / "catalog.npz")["user_ids"][0])
    with ServerProcess(models, env={"MUSICML_SERVE_ADMIN_TOKEN": "s3cret"}, log_path=tmp_path / "server.log") as srv:
        post = lambda path, **kw: httpx.post(srv.url + path, headers=token, timeout=60, **kw)
        serving = lambda: httpx.post(srv.url + "/v1/recommendations", json={"user_id": uid}).json()["model_version"]
        assert serving() == "v2"
        # a NaN bundle and a wrong-shape bundle with valid hashes: refused (409) naming file and stage; v2 keeps serving
        nan = _rehashed_copy(models / "v2", staging / "v3", "als.npz", lambda a: a["item_vecs"].fill(np.nan))
        os.rename(nan, models / "v3")
        r = post("/admin/reload")
        assert r.status_code == 409 and r.json()["code"] == "reload_refused", r.text
        log = (tmp_path / "server.log").read_text()
        assert "v3/als.npz: stage 'als': array 'item_vecs' holds" in log and "non-finite" in log
        assert serving() == "v2"
        shape = _rehashed_copy(models / "v2", staging / "v4", "itemknn.npz", lambda a: a.update(sim=a["sim"][:-1]))
        os.rename(shape, models / "v4")
        r = post("/admin/reload", params={"version": "v4"})
        assert r.status_code == 409 and serving() == "v2"
        assert "v4/itemknn.npz: stage 'itemknn': array 'sim' has shape (199, 200), the manifest says (200, 200)" in \
            (tmp_path / "server.log").read_text()
        assert _metric(srv.url, "musicml_model_load_failures", reason="sense") == 2
        # roll back with refused newer versions in place: the named good version serves, and stays pinned
        r = post("/admin/rollback")
        assert r.status_code == 200 and r.json()["status"] == "swapped" and serving() == "v1"
        versions = httpx.get(srv.url + "/admin/versions", headers=token).json()
        assert versions["pinned"] == "v1" and {v["version"]: v["state"] for v in versions["versions"]} == \
            {"v1": "serving", "v2": "available", "v3": "refused", "v4": "refused"}
        assert httpx.post(srv.url + "/admin/reload", params={"version": "v2"}).status_code == 403      # no token
        r = post("/admin/reload", params={"version": "v2"})
        assert r.status_code == 200 and serving() == "v2" and (models / "PINNED").is_file()
        assert post("/admin/reload", params={"version": "v7"}).status_code == 404
        r = post("/admin/reload")                                      # unpin: the newest that loads (v3, v4 refused)
        assert r.status_code == 200 and serving() == "v2" and not (models / "PINNED").exists()
