"""Several live versions by alias on the real server: an experiment config maps arms to model aliases with traffic
shares; 10,000 users' arms pass the SRM check and each arm is served by its alias's model (what that bundle gives
offline); pin and rollback under load fail no request; several processes converge on a pin; the admin endpoints need
the token, and the service refuses to start on a bad config or on a public address with open admin endpoints."""
import asyncio
import json
import random
import shutil
import threading
import time

import httpx
from conftest import offline_answers, run_cli
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.experiment.analysis import srm_check
from musicml.experiment.assign import Experiment, Layer
from musicml.experiment.events import read_events
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.loadgen import ServerProcess

TOKEN = {"x-admin-token": "s3cret"}
CONFIG = """
[experiment]
name = "ranker-v2"
traffic = 0.9

[experiment.arms.control]
alias = "champion"
share = 0.5

[experiment.arms.treatment]
alias = "challenger"
share = 0.5

[aliases]
challenger = "v1"
"""
LAYER = Layer("serve", [Experiment("ranker-v2", {"control": 0.5, "treatment": 0.5}, traffic=0.9)])   # the toolkit's own


def _models(root, extra=()):
    "v1 (ItemKNN), v2 (ALS), v3 (both: champion, the newest) on one synthetic catalogue: the same users, other answers."
    models = root / "models"
    for v, retr in (("v1", ("itemknn",)), ("v2", ("als",)), ("v3", ("itemknn", "als")), *extra):
        build_synthetic_artifacts(models, v, n_users=120, n_items=300, n_interactions=4000, seed=0, retrievers=retr)
    cfg = root / "experiment.toml"; cfg.write_text(CONFIG)
    return models, cfg


def _env(cfg, **kw):
    return {"MUSICML_SERVE_EXPERIMENT_CONFIG": str(cfg), "MUSICML_SERVE_ADMIN_TOKEN": "s3cret", "MUSICML_SERVE_MAX_WAIT_MS": "1", **kw}


def _offline(version_dir, users):
    "{user: (model_version, artist ids)} that bundle `version_dir` alone recommends (top 10)."
    answers = offline_answers(version_dir, [{"user_id": u, "k": 10} for u in users])
    return {u: (r["model_version"], [a["artist_id"] for a in r["items"]]) for u, r in zip(users, answers)}


async def _many(url, users, concurrency=16):
    "POST /v1/recommendations for each user (a few keep-alive connections): {user: response body}."
    out, q = {}, list(users)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker():
            while q:
                u = q.pop()
                r = await c.post("/v1/recommendations", json={"user_id": u, "k": 5})
                assert r.status_code == 200, r.text
                out[u] = r.json()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def test_arms_pass_srm_and_each_is_served_by_its_alias(tmp_path):
    models, cfg = _models(tmp_path)
    known = [int(u) for u in load_arrays(models / "v1" / "catalog.npz")["user_ids"][:40]]
    users = list(range(5_000_000, 5_010_000))                    # 10,000 distinct users (not in the catalogue: cold start)
    with ServerProcess(models, env=_env(cfg, MUSICML_SERVE_EXPOSURE_LOG=str(tmp_path / "exposures")),
                       log_path=tmp_path / "server.log") as srv:
        ready = httpx.get(srv.url + "/readyz").json()
        assert ready["aliases"] == {"champion": "v3", "challenger": "v1"} and ready["experiment"] == "ranker-v2", ready
        served = asyncio.run(_many(srv.url, users))
        seq = {u: httpx.post(srv.url + "/v1/recommendations", json={"user_id": u, "k": 10}).json() for u in known}
        anon = httpx.post(srv.url + "/v1/recommendations", json={"recent_artist_ids": [1, 2, 3]}).json()
        rank = {u: httpx.post(srv.url + "/v1/rank", json={"user_id": u, "candidate_ids": [1, 2, 3]}).json() for u in known[:10]}
        fams = {f.name: f for f in text_string_to_metric_families(httpx.get(srv.url + "/metrics").text)}
    # the arms: exactly the toolkit's assignment, in the planned shares (none = outside the 90% traffic)
    arms = {u: b["arm"] for u, b in served.items()}
    want = {u: (a.arm if (a := LAYER.assign(u)) else None) for u in users}
    assert arms == want
    counts = [sum(a == arm for a in arms.values()) for arm in ("control", "treatment", None)]
    srm = srm_check(counts, [0.45, 0.45, 0.10])
    print(f"\n10,000 users: control {counts[0]}, treatment {counts[1]}, outside {counts[2]}; SRM p = {srm.pvalue:.3f}")
    assert not srm.mismatch, srm
    # each arm served by its alias's version
    alias_of = {"control": "champion", "treatment": "challenger", None: "champion"}
    version_of = {"champion": "v3", "challenger": "v1"}
    for b in [*served.values(), *seq.values(), *rank.values()]:
        assert b["model_alias"] == alias_of[b["arm"]] and b["model_version"] == version_of[b["model_alias"]], b
    assert anon["arm"] is None and anon["model_version"] == "v3"
    # ... and its recommendations are what that bundle gives offline
    offline = {v: _offline(models / v, known) for v in ("v1", "v3")}
    assert any(offline["v1"][u][1] != offline["v3"][u][1] for u in known)      # the two versions answer differently
    for u, b in seq.items():
        v = b["model_version"]
        assert (v, [a["artist_id"] for a in b["items"]]) == offline[v][u], (u, b["arm"])
    assert {seq[u]["arm"] for u in known} >= {"control", "treatment"}
    # counted per arm and alias; which version each alias serves
    reqs = {(s.labels["arm"], s.labels["alias"]): s.value for s in fams["musicml_arm_requests"].samples if s.name.endswith("_total")}
    assert reqs[("treatment", "challenger")] >= counts[1] and reqs[("none", "champion")] >= counts[2]
    assert {(s.labels["alias"], s.labels["version"]) for s in fams["musicml_alias_info"].samples if s.value == 1} == \
        {("champion", "v3"), ("challenger", "v1")}
    # the exposures record the arm and the version actually served
    ev = read_events(tmp_path / "exposures"); ev = ev[ev["kind"] == "exposure"]
    by_request = {b["request_id"]: b for b in [*served.values(), *seq.values()] if b["arm"] is not None}
    assert len(ev) == len(by_request)
    for _, e in ev.iterrows():
        b = by_request[e["request_id"]]
        assert (e["arm"], e["model_version"], int(e["unit_id"])) == (b["arm"], b["model_version"], b["user_id"])


def test_pin_and_rollback_under_load_fail_no_request(tmp_path):
    models, cfg = _models(tmp_path)
    bad = tmp_path / "v4"; shutil.copytree(models / "v3", bad)
    raw = bytearray((bad / "als.npz").read_bytes()); raw[len(raw) // 2] ^= 0xFF; (bad / "als.npz").write_bytes(bytes(raw))
    shutil.move(bad, models / "v0-tampered")                       # a tampered version (sorted before v1: never the newest)
    users = [int(u) for u in load_arrays(models / "v1" / "catalog.npz")["user_ids"]]
    treat = [u for u in users if LAYER.assign(u) and LAYER.assign(u).arm == "treatment"]
    ctrl = [u for u in users if LAYER.assign(u) and LAYER.assign(u).arm == "control"]
    log, stop = [], threading.Event()
    with ServerProcess(models, env=_env(cfg), log_path=tmp_path / "server.log") as srv:
        def hammer(seed):
            rng = random.Random(seed)
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                while not stop.is_set():
                    u, t0 = rng.choice(users), time.monotonic()
                    r = c.post("/v1/recommendations", json={"user_id": u, "k": 10, "diversity": 0.2})
                    b = r.json() if r.status_code == 200 else {}
                    log.append((t0, r.status_code, b.get("arm"), b.get("model_alias"), b.get("model_version")))
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads: t.start()
        admin = httpx.Client(base_url=srv.url, headers=TOKEN, timeout=60)
        steps = {}
        def step(name, method, path, **kw):
            time.sleep(0.4)
            t0 = time.monotonic(); r = admin.request(method, path, **kw); steps[name] = (t0, time.monotonic())
            return r
        try:
            assert step("pin", "POST", "/admin/aliases/challenger", json={"version": "v2"}).json()["status"] == "swapped"
            r = step("tampered", "POST", "/admin/aliases/challenger", json={"version": "v0-tampered"})
            assert r.status_code == 409 and r.json()["code"] == "reload_refused" and "sha256" in r.json()["message"], r.text
            assert step("unknown", "POST", "/admin/aliases/challenger", json={"version": "v9"}).status_code == 404
            assert step("rollback", "POST", "/admin/aliases/challenger/rollback").json()["version"] == "v1"
            assert step("pin-champion", "POST", "/admin/aliases/champion", json={"version": "v2"}).json()["version"] == "v2"
            assert step("rollback-champion", "POST", "/admin/aliases/champion/rollback").json()["version"] == "v3"
            assert step("pin-again", "POST", "/admin/aliases/challenger", json={"version": "v2"}).json()["version"] == "v2"
            listing = admin.get("/admin/aliases").json()
            time.sleep(0.4)
        finally:
            stop.set()
            for t in threads: t.join()
        # without the token: refused, and nothing changed
        assert httpx.post(srv.url + "/admin/aliases/challenger", json={"version": "v3"}).status_code == 403
        assert httpx.post(srv.url + "/admin/aliases/challenger/rollback").status_code == 403
        assert httpx.get(srv.url + "/admin/aliases").status_code == 403
        after = {u: httpx.post(srv.url + "/v1/recommendations", json={"user_id": u}).json()["model_version"] for u in treat[:5] + ctrl[:5]}
    failed = [x for x in log if x[1] != 200]
    print(f"\npin and rollback under load: {len(log)} requests, {len(failed)} failed")
    assert len(log) > 200 and not failed, failed[:5]
    assert set(after.values()) == {"v2", "v3"} and all(after[u] == "v2" for u in treat[:5])
    # a request that started after a swap was answered was served by the new version
    order = sorted(steps.values())
    def served_after(name, alias):
        "Versions `alias` served to requests started after step `name` answered and before the next step began."
        end = steps[name][1]; nxt = min([s for s, _ in order if s > end], default=float("inf"))
        return {v for t0, _, _, al, v in log if end < t0 < nxt and al == alias}
    assert served_after("pin", "challenger") <= {"v2"} and served_after("rollback", "challenger") <= {"v1"}
    assert served_after("pin-champion", "champion") <= {"v2"} and served_after("rollback-champion", "champion") <= {"v3"}
    assert {v for _, _, _, al, v in log if al == "challenger"} == {"v1", "v2"}          # the tampered version never served
    a = listing["aliases"]
    assert a["challenger"]["version"] == "v2" and a["challenger"]["source"] == "pin" and a["challenger"]["previous"] == ["v1"]
    assert a["champion"]["version"] == "v3" and listing["experiment"]["arms"]["treatment"] == {"alias": "challenger", "share": 0.5}
    states = {v["version"]: (v["state"], v["aliases"]) for v in listing["versions"]}
    assert states["v2"] == ("serving", ["challenger"]) and states["v3"] == ("serving", ["champion"]) and states["v0-tampered"][0] == "refused"
    assert json.loads((models / "ALIASES").read_text())["challenger"]["version"] == "v2"    # every process, and a restart, follow it


def _alias_versions(url) -> dict:
    "pid -> {alias: version} from musicml_alias_info."
    out = {}
    for f in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        if f.name == "musicml_alias_info":
            for s in f.samples:
                if s.value == 1: out.setdefault(s.labels["pid"], {})[s.labels["alias"]] = s.labels["version"]
    return out


def test_several_processes_converge_on_a_pin(tmp_path):
    models, cfg = _models(tmp_path)
    treat = [u for u in (int(x) for x in load_arrays(models / "v1" / "catalog.npz")["user_ids"])
             if LAYER.assign(u) and LAYER.assign(u).arm == "treatment"]
    with ServerProcess(models, args=("--processes", "2"), env=_env(cfg), log_path=tmp_path / "server.log") as srv:
        assert [v["challenger"] for v in _alias_versions(srv.url).values()] == ["v1", "v1"]
        r = httpx.post(srv.url + "/admin/aliases/challenger", json={"version": "v2"}, headers=TOKEN, timeout=60)
        assert r.status_code == 200, r.text                          # one process swapped; the other follows the file
        for _ in range(100):
            if [v["challenger"] for v in _alias_versions(srv.url).values()] == ["v2", "v2"]: break
            time.sleep(0.1)
        assert [v["challenger"] for v in _alias_versions(srv.url).values()] == ["v2", "v2"]
        with httpx.Client(base_url=srv.url, limits=httpx.Limits(max_keepalive_connections=0)) as c:   # a new connection each:
            got = {c.post("/v1/recommendations", json={"user_id": u}).json()["model_version"] for u in treat[:30]}   # both workers
        assert got == {"v2"}


def test_start_refuses_bad_configs_and_open_admin_on_a_public_address(tmp_path):
    models, cfg = _models(tmp_path)
    def refused(text=None, *args, env=None):
        if text is not None: cfg.write_text(text)
        p = run_cli("serve", "--models", models, "--experiment-config", cfg, *args, env=env, check=False, timeout=120)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        return p.stderr
    assert f"{cfg}: experiment.arms: shares sum to 0.9, not 1" in refused(CONFIG.replace("share = 0.5\n\n[aliases]", "share = 0.4\n\n[aliases]"))
    assert f"{cfg}: aliases.challenger: no version 'v7'" in refused(CONFIG.replace('challenger = "v1"', 'challenger = "v7"'))
    assert f"{cfg}: experiment.arms.treatment.alias: unknown alias 'ranker-b'" in \
        refused(CONFIG.replace('alias = "challenger"', 'alias = "ranker-b"'))
    assert f"{cfg}: experiment.arm: unknown key" in refused(CONFIG.replace("[experiment.arms.control]", "[experiment.arm.control]"))
    err = refused(CONFIG, "--host", "0.0.0.0")
    assert "refusing to bind '0.0.0.0'" in err and "MUSICML_SERVE_ADMIN_TOKEN" in err
    assert "refusing to bind '::'" in refused(CONFIG, "--host", "::", env={"MUSICML_SERVE_ADMIN_TOKEN": ""})


def test_not_ready_while_an_arms_alias_cannot_load_until_it_is_pinned(tmp_path):
    models, cfg = _models(tmp_path)
    f = models / "v1" / "itemknn.npz"; raw = bytearray(f.read_bytes()); raw[len(raw) // 2] ^= 0xFF; f.write_bytes(bytes(raw))
    users = [int(u) for u in load_arrays(models / "v2" / "catalog.npz")["user_ids"]]
    treat = next(u for u in users if LAYER.assign(u) and LAYER.assign(u).arm == "treatment")
    ctrl = next(u for u in users if LAYER.assign(u) and LAYER.assign(u).arm == "control")
    srv = ServerProcess(models, env=_env(cfg), log_path=tmp_path / "server.log").start(wait_ready=False)
    try:
        for _ in range(300):
            r = httpx.get(srv.url + "/readyz")
            if "challenger" in r.json().get("message", ""): break
            time.sleep(0.1)
        assert r.status_code == 503 and r.json()["code"] == "not_ready", r.text
        assert "model aliases not loaded: challenger (experiment 'ranker-v2' arm treatment; version v1: invalid:" in r.json()["message"]
        rec = lambda u: httpx.post(srv.url + "/v1/recommendations", json={"user_id": u})
        assert rec(ctrl).status_code == 200 and rec(treat).status_code == 503   # the treatment is never served another model
        r = httpx.post(srv.url + "/admin/aliases/challenger", json={"version": "v2"}, headers=TOKEN, timeout=60)
        assert r.status_code == 200 and httpx.get(srv.url + "/readyz").status_code == 200, r.text
        assert rec(treat).json()["model_version"] == "v2"
    finally:
        srv.stop()
