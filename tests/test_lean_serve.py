"""A service install without torch: baseline bundles never import it, trained bundles run from their ONNX graphs.

Each check runs the real service (uvicorn on 127.0.0.1, in a thread of a fresh interpreter) and inspects that
interpreter's `sys.modules` after it has loaded a bundle and answered requests. For the trained bundle, torch,
lightning and matplotlib are made unimportable in the child (a `sys.meta_path` finder raising ImportError), and the
stages' outputs are compared with the same stages run in torch eager in this process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT

from musicml.recipes.bundles import build_synthetic_artifacts, build_synthetic_trained_artifacts
from musicml.serve.registry import load_bundle

HEAVY = ("torch", "lightning", "matplotlib")

CHILD = textwrap.dedent('''
    import json, socket, sys, threading, time
    BLOCK = {block!r}
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK: raise ImportError(f"{{name}} is blocked in this test")
    sys.meta_path.insert(0, _Block())

    import httpx, uvicorn
    import musicml.serve.cli                      # what `musicml serve` imports, besides the app
    from musicml.serve.app import Settings, create_app
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    app = create_app(Settings(models={models!r}, max_wait_ms=1))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{{port}}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200: break
        except httpx.HTTPError: pass
        time.sleep(0.1)
    out = {{"ready": httpx.get(url + "/readyz").json(), "recs": []}}
    for uid in {users!r}:
        r = httpx.post(url + "/v1/recommendations", json={{"user_id": uid, "k": 10}}, timeout=10)
        out["recs"].append([r.status_code, r.json()])
    out["anon"] = httpx.post(url + "/v1/recommendations", json={{"recent_artist_ids": {recent!r}, "k": 5}}, timeout=10).json()
    out["metrics"] = httpx.get(url + "/metrics").status_code
    {extra}
    server.should_exit = True; time.sleep(0.3)
    out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning", "matplotlib"))
    print("RESULT " + json.dumps(out))
''')


def run_child(models, users, recent, block=(), extra="") -> dict:
    code = CHILD.format(block=set(block), models=str(models), users=list(users), recent=list(recent), extra=extra)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, f"child exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _check_served(out, version="v1"):
    assert out["ready"]["status"] == "ready" and out["ready"]["model_version"] == version, out["ready"]
    for code, body in out["recs"]:
        assert code == 200 and len(body["items"]) == 10 and body["path"] == "personalized", body
        assert body["degraded"] is False, body
    assert len(out["anon"]["items"]) == 5 and out["metrics"] == 200


def test_baseline_service_imports_no_torch(tmp_path):
    "Nothing blocked: loading a baseline bundle and serving it simply never imports torch, lightning or matplotlib."
    d = build_synthetic_artifacts(tmp_path / "models", "v1", n_users=60, n_items=200, n_interactions=2500)
    cat = np.load(d / "catalog.npz")
    out = run_child(tmp_path / "models", cat["user_ids"][:3].tolist(), cat["item_ids"][:3].tolist())
    _check_served(out)
    assert out["modules"] == [], f"the baseline service imported {out['modules']}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A small trained bundle (built here, with torch), and its stages' outputs in torch eager on fixed inputs."
    models = tmp_path_factory.mktemp("models")
    d = build_synthetic_trained_artifacts(models, "v1", n_users=100, n_items=300, n_interactions=4000, epochs=1)
    b = load_bundle(d)
    users = np.arange(0, 100, 7)
    hist = b.seen[users]
    tt, sas, rk = b.retrievers["two_tower"], b.retrievers["sasrec"], b.ranker
    for st in (tt, sas, rk): st.runner = None                    # the torch modules, rebuilt from the stored weights
    cand, _ = tt.retrieve(hist, users, 20)
    ref = {"vectors": tt.vectors(hist, users), "sasrec": sas.scores(hist, users), "cand": cand,
           "rank": rk.rank(b.stages, b.popularity, hist, users, cand), "sasrec_top": sas.retrieve(hist, users, 10)[0]}
    return models, d, users, ref, b


CHECK_STAGES = textwrap.dedent('''
    import numpy as np
    from musicml.serve.registry import load_bundle
    b = load_bundle({path!r}); users = np.asarray({users!r})
    hist = b.seen[users]; tt, sas, rk = b.retrievers["two_tower"], b.retrievers["sasrec"], b.ranker
    cand = np.asarray({cand!r}, np.int32)
    out["runners"] = [type(s.runner).__name__ for s in (tt, sas, rk)]
    out["vectors"] = tt.vectors(hist, users).tolist(); out["sasrec"] = sas.scores(hist, users).tolist()
    out["rank"] = rk.rank(b.stages, b.popularity, hist, users, cand).tolist()
    out["sasrec_top"] = sas.retrieve(hist, users, 10)[0].tolist()
''')


def test_trained_bundle_serves_without_torch(trained):
    "torch, lightning and matplotlib cannot be imported: the trained stages load from ONNX and score as torch does."
    models, d, users, ref, b = trained
    extra = CHECK_STAGES.format(path=str(d), users=users.tolist(), cand=ref["cand"].tolist())
    out = run_child(models, b.user_ids[users[:3]].tolist(), b.item_ids[:3].tolist(), block=HEAVY, extra=extra)
    _check_served(out)
    assert out["ready"]["models"]["ranker"] == "dcn@v1" and out["ready"]["models"]["sasrec"] == "sasrec@v1"
    assert out["modules"] == [] and out["runners"] == ["Runner"] * 3
    np.testing.assert_allclose(np.array(out["vectors"]), ref["vectors"], atol=1e-4)
    s = np.array(out["sasrec"]); fin = np.isfinite(ref["sasrec"])
    assert (np.isfinite(s) == fin).all()
    np.testing.assert_allclose(s[fin], ref["sasrec"][fin], atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.array(out["rank"]), ref["rank"], atol=1e-4, rtol=1e-4)
    assert (np.array(out["sasrec_top"]) == ref["sasrec_top"]).mean() > 0.95      # same top items (ties may swap)


def test_bundle_without_reference_outputs_is_refused_without_torch(trained, tmp_path):
    "An older trained bundle (no stored reference outputs) needs torch to check its graphs: refused, naming the graph."
    import shutil

    from musicml.artifacts import write_manifest
    _, d, *_ = trained
    old = tmp_path / "models" / "v0"; shutil.copytree(d, old)
    m = json.loads((old / "manifest.json").read_text())
    for s in m["stages"].values():
        if s["config"].pop("reference", None): (old / f"{s['file'].split('.')[0]}.reference.npz").unlink()
    write_manifest(old, **{k: v for k, v in m.items() if k != "files"})
    load_bundle(old)                                             # with torch: checked against the weights, loads
    code = (f"import sys\nclass B:\n    def find_spec(self, n, p=None, t=None):\n"
            f"        if n.split('.')[0] in {set(HEAVY)!r}: raise ImportError(n)\nsys.meta_path.insert(0, B())\n"
            f"from musicml.serve.registry import load_bundle\nload_bundle({str(old)!r})")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode != 0 and "ArtifactError" in p.stderr and "no reference outputs stored" in p.stderr, p.stderr[-2000:]
    assert ".onnx" in p.stderr.splitlines()[-1]
