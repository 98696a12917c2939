"""The ranking service as a real uvicorn server on 127.0.0.1: every endpoint, /metrics, readiness, errors, fallbacks."""
import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.recipes.bundles import build_synthetic_artifacts, build_synthetic_trained_artifacts
from musicml.serve.api import RankResponseV1, RecommendationResponseV1, SimilarResponseV1
from musicml.serve.loadgen import ServerProcess

# every endpoint test runs against both kinds of bundle: baselines with the blend ranker, and trained models
# (two-tower + SASRec retrieval, a DCN ensemble with EASE, friends and tag-profile features, ItemKNN for /similar)
BUNDLES = {"baselines": (build_synthetic_artifacts, {"itemknn": "itemknn", "als": "embedding", "ranker": "blend"}),
           "trained": (build_synthetic_trained_artifacts, {"two_tower": "two_tower", "sasrec": "sasrec", "ease": "ease",
                                                           "friends": "friends", "friends_share": "friends",
                                                           "tag_profile": "tag_profile", "itemknn": "itemknn", "ranker": "dcn"})}


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def server(request, tmp_path_factory):
    "A server started on an empty models directory, observed before loading, then given a bundle and reloaded."
    models = tmp_path_factory.mktemp("models")
    log = tmp_path_factory.mktemp("logs") / "server.log"
    srv = ServerProcess(models, env={"MUSICML_SERVE_MAX_WAIT_MS": "1", "MUSICML_SERVE_ACCESS_LOG": "true"}, log_path=log)
    srv.start(wait_ready=False)
    try:
        before = {"readyz": httpx.get(srv.url + "/readyz"), "healthz": httpx.get(srv.url + "/healthz"),
                  "recs": httpx.post(srv.url + "/v1/recommendations", json={"user_id": 1})}
        d = BUNDLES[request.param][0](models, "v1")
        srv.reload = httpx.post(srv.url + "/admin/reload", timeout=60)
        srv.wait("/readyz", 30)
        srv.before, srv.catalog, srv.log, srv.kinds = before, load_arrays(d / "catalog.npz"), log, BUNDLES[request.param][1]
        yield srv
    finally:
        srv.stop()


def post(srv, path, body, **kw):
    return httpx.post(srv.url + path, json=body, timeout=10, **kw)


def test_not_ready_until_models_are_loaded(server):
    b = server.before
    assert b["healthz"].status_code == 200
    assert b["readyz"].status_code == 503 and "no model bundle loaded" in b["readyz"].json()["message"]
    assert b["readyz"].json()["code"] == "not_ready" and b["recs"].json()["code"] == "unavailable"
    assert b["recs"].status_code == 503
    assert server.reload.json()["status"] == "swapped"
    r = httpx.get(server.url + "/readyz").json()
    assert r["status"] == "ready" and r["model_version"] == "v1"
    assert r["models"] == {name: f"{kind}@v1" for name, kind in server.kinds.items()}


def test_recommendations_for_a_user(server):
    uid = int(server.catalog["user_ids"][3])
    r = post(server, "/v1/recommendations", {"user_id": uid, "k": 7}, headers={"x-request-id": "req-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    body = r.json()
    RecommendationResponseV1.model_validate(body)                # the documented v1 shape, field for field
    assert body["request_id"] == "req-42" and body["api_version"] == "v1" and body["model_version"] == "v1"
    assert body["path"] == "personalized" and body["degraded"] is False
    items = body["items"]
    assert len(items) == 7 and [a["rank"] for a in items] == list(range(1, 8))
    assert len({a["artist_id"] for a in items}) == 7
    seen = set(server.catalog["item_ids"][server.catalog["seen"][[3]].indices].tolist())
    assert not seen & {a["artist_id"] for a in items}
    assert all(a["score"] >= b["score"] for a, b in zip(items, items[1:])) or body["items"][0]["source"] == "ranker"


def test_recommendations_from_recent_artists_filters_and_unknown_ids(server):
    arts = server.catalog["item_ids"][:5].tolist()
    r = post(server, "/v1/recommendations", {"recent_artist_ids": [*arts, 2_000_000_000], "k": 20, "diversity": 0.5,
                                             "filters": {"exclude_artist_ids": [arts[5 % len(arts)]], "min_listeners": 2}})
    body = r.json()
    assert r.status_code == 200 and body["unknown_artist_ids"] == [2_000_000_000] and body["path"] == "personalized"
    RecommendationResponseV1.model_validate(body)
    got = [a["artist_id"] for a in body["items"]]
    assert len(got) == 20 and not set(got) & set(arts)


def test_unknown_user_and_empty_history_take_the_cold_start_path(server):
    for body in ({"user_id": 2**31 - 1, "k": 5}, {"recent_artist_ids": [], "k": 5}, {"recent_artist_ids": [2**31 - 1], "k": 5}):
        r = RecommendationResponseV1.model_validate(post(server, "/v1/recommendations", body).json()).model_dump()
        assert r["path"] == "cold_start" and r["degraded"] is False and {a["source"] for a in r["items"]} == {"popularity"}
        assert len(r["items"]) == 5


def test_rank(server):
    uid, cands = int(server.catalog["user_ids"][0]), server.catalog["item_ids"][10:20].tolist()
    r = post(server, "/v1/rank", {"user_id": uid, "candidate_ids": cands + cands[:2]})
    body = r.json()
    RankResponseV1.model_validate(body)
    assert r.status_code == 200 and sorted(a["artist_id"] for a in body["items"]) == sorted(cands)
    scores = [a["score"] for a in body["items"]]
    assert scores == sorted(scores, reverse=True)
    part = post(server, "/v1/rank", {"user_id": uid, "candidate_ids": [cands[0], 2_000_000_000]})   # unknown ids: reported
    assert part.status_code == 200 and [a["artist_id"] for a in part.json()["items"]] == [cands[0]]
    assert part.json()["unknown_candidate_ids"] == [2_000_000_000]


def test_similar(server):
    a = int(server.catalog["item_ids"][0])
    r = httpx.get(f"{server.url}/v1/artists/{a}/similar", params={"k": 5})
    body = r.json()
    SimilarResponseV1.model_validate(body)
    assert r.status_code == 200 and body["stage"] == "itemknn" and 0 < len(body["items"]) <= 5
    assert a not in [x["artist_id"] for x in body["items"]]
    r = httpx.get(f"{server.url}/v1/artists/2000000000/similar")
    assert r.status_code == 404 and "unknown artist_id 2000000000" in r.json()["message"]
    assert httpx.get(f"{server.url}/v1/artists/{a}/similar", params={"k": 0}).status_code == 422


@pytest.mark.parametrize("raw, needle", [
    (b'{"user_id": 1, "k": ', "invalid JSON at character"),
    (b'{"user_id": "abc"}', "user_id"),
    (b'{"user_id": 1, "k": 0}', "greater than or equal to 1"),
    (b'{"user_id": 1, "k": 201}', "less than or equal to 200"),
    (b'{"user_id": 1, "kk": 3}', "Extra inputs are not permitted"),
    (b'{"k": 3}', "give user_id or recent_artist_ids"),
    (b'{"recent_artist_ids": "1,2"}', "recent_artist_ids"),
    (b'[1, 2]', "valid dictionary"),
])
def test_bad_requests_get_a_clear_422(server, raw, needle):
    r = httpx.post(server.url + "/v1/recommendations", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json()), r.text


def test_metrics_parse_and_cover_the_pipeline(server):
    post(server, "/v1/recommendations", {"user_id": int(server.catalog["user_ids"][1])})
    text = httpx.get(server.url + "/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("musicml_requests", "musicml_request_duration_seconds", "musicml_stage_duration_seconds",
                 "musicml_batch_size", "musicml_fallbacks", "musicml_model_info", "musicml_model_load_failures",
                 "musicml_model_created_timestamp_seconds", "musicml_ready", "musicml_inflight_requests"):
        assert name in fams, name
    info = [s for s in fams["musicml_model_info"].samples]
    assert info[0].labels["version"] == "v1" and info[0].value == 1
    ok = [s for s in fams["musicml_requests"].samples if s.name == "musicml_requests_total"
          and s.labels["route"] == "/v1/recommendations" and s.labels["status"] == "200"]
    assert ok and ok[0].value >= 1
    stages = {s.labels["stage"] for s in fams["musicml_stage_duration_seconds"].samples}
    assert {"retrieve", "rank", "postprocess"} <= stages
    assert [s.value for s in fams["musicml_ready"].samples] == [1.0]


def test_logs_are_json_with_request_ids(server):
    post(server, "/v1/recommendations", {"user_id": 1}, headers={"x-request-id": "log-check-1"})
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any(x.get("event") == "model_loaded" for x in lines)
    assert any(x.get("request_id") == "log-check-1" and x.get("event") == "access" for x in lines)


def test_failing_stages_degrade_instead_of_failing(tmp_path):
    build_synthetic_artifacts(tmp_path, "v1", n_users=50, n_items=200, n_interactions=2000)
    env = {"MUSICML_SERVE_FAULTS": "rank:error", "MUSICML_SERVE_ADMIN_TOKEN": "s3cret"}
    with ServerProcess(tmp_path, env=env) as srv:
        r = RecommendationResponseV1.model_validate(post(srv, "/v1/recommendations", {"user_id": 1, "k": 5}).json()).model_dump()
        assert r["degraded"] is True and r["degraded_reasons"] == ["rank:error"] and len(r["items"]) == 5
        assert {a["source"] for a in r["items"]} == {"retrieval"}
        r = post(srv, "/v1/rank", {"user_id": 1, "candidate_ids": [0, 1, 2]}).json()
        assert r["degraded"] is True and len(r["items"]) == 3
        text = httpx.get(srv.url + "/metrics").text
        assert 'musicml_fallbacks_total{reason="error",stage="rank"} 2.0' in text
        assert httpx.post(srv.url + "/admin/reload").status_code == 403
        assert httpx.post(srv.url + "/admin/reload", headers={"x-admin-token": "s3cret"}).json()["status"] == "unchanged"


def test_oversized_body_is_refused_before_parsing(server):
    r = httpx.post(server.url + "/v1/recommendations", content=b"[" + b"1," * 600_000 + b"1]",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.json()["message"] and r.json()["code"] == "body_too_large"
