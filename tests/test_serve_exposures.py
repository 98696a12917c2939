"The service logs exposures (arm + model version + artists shown) that the experimentation toolkit analyses."
import httpx

from musicml.artifacts import load_arrays
from musicml.experiment.assign import Experiment, Layer
from musicml.experiment.events import read_events
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.loadgen import ServerProcess


def test_recommendations_are_logged_as_exposures(tmp_path):
    models, events = tmp_path / "models", tmp_path / "exposures"
    d = build_synthetic_artifacts(models, "v1")
    users = [int(u) for u in load_arrays(d / "catalog.npz")["user_ids"][:20]]
    env = {"MUSICML_SERVE_EXPERIMENT": "ranker-v2:control=0.5,treatment=0.5", "MUSICML_SERVE_EXPOSURE_LOG": str(events)}
    srv = ServerProcess(models, env=env, log_path=tmp_path / "server.log")
    srv.start()
    try:
        served = {}
        for u in users:
            r = httpx.post(srv.url + "/v1/recommendations", json={"user_id": u, "k": 5}, timeout=10)
            assert r.status_code == 200
            served[u] = r.json()
        assert httpx.post(srv.url + "/v1/recommendations", json={"recent_artist_ids": [1, 2]}, timeout=10).status_code == 200
    finally:
        srv.stop()  # graceful shutdown writes the buffered events
    ev = read_events(events)
    ev = ev[ev["kind"] == "exposure"]
    assert sorted(ev["unit_id"].astype(int)) == sorted(users)  # one per user request; anonymous histories are not units
    layer = Layer("serve", [Experiment("ranker-v2")])
    for _, e in ev.iterrows():
        body = served[int(e["unit_id"])]
        assert e["experiment"] == "ranker-v2" and e["arm"] == layer.assign(int(e["unit_id"])).arm
        assert e["model_version"] == "v1" and e["request_id"] == body["request_id"]
        assert [int(i) for i in e["items"]] == [a["artist_id"] for a in body["items"]]
    assert set(ev["arm"]) == {"control", "treatment"}
