"""Search in the service end to end: the one app (`musicml.serve.app`) as a real uvicorn server on 127.0.0.1 with its search
router mounted by a setting, serving /v1/search, /healthz, /readyz and /metrics."""
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.search.catalog import Catalog
from musicml.search.embed import EmbeddingCache, Encoder
from musicml.search.hybrid import Searcher

DOCS = Catalog(["lastfm:1", "lastfm:2", "lastfm:3", "musiccaps:abc"], ["Slowdive", "Metallica", "Burial", "abc @30s"],
               ["Slowdive. Tags: shoegaze, dream pop, female vocalists.", "Metallica. Tags: thrash metal, heavy metal.",
                "Burial. Tags: dubstep, uk garage.", "A soft female voice sings over hazy, reverb-drenched guitars."],
               ["lastfm", "lastfm", "lastfm", "musiccaps"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    s = Searcher.build(DOCS, Encoder("fp32"), cache=EmbeddingCache(tmp / "emb"))
    s.users = {7: s.vecs[1]}
    s.save(tmp / "index")
    build_synthetic_artifacts(tmp / "models", "v1")       # the service's readiness is about its models: the tiny bundle
    port = _free_port()
    env = {**os.environ, "MUSICML_SERVE_SEARCH_INDEX": str(tmp / "index"), "MUSICML_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1",
           "MUSICML_SERVE_SEARCH_BACKEND": "fp32", "MUSICML_SERVE_MODELS": str(tmp / "models"), "MUSICML_SERVE_MAX_WAIT_MS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "musicml.serve.app:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if proc.poll() is not None: raise RuntimeError(f"uvicorn exited: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200: break
            except httpx.HTTPError: time.sleep(0.2)
        first_ready = httpx.get(f"{base}/readyz", timeout=5)
        while (r := httpx.get(f"{base}/readyz", timeout=5)).status_code != 200 or r.json()["search"] != "ready":
            if time.time() > deadline: raise RuntimeError(f"models or search index never became ready: {r.text}")
            time.sleep(0.2)
        yield base, first_ready
    finally:
        proc.terminate()
        proc.wait(10)


def test_health_and_ready(server):
    base, first_ready = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert first_ready.status_code in (200, 503)  # 503 ("loading") when the probe beat the loader thread
    if first_ready.status_code == 503: assert first_ready.json()["code"] == "not_ready"
    r = httpx.get(f"{base}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and (r.json()["search"], r.json()["search_docs"]) == ("ready", 4)


def test_search(server):
    base, _ = server
    r = httpx.post(f"{base}/v1/search", json={"query": "dreamy shoegaze with female vocals", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["api_version"] == "v1" and body["mode"] == "hybrid" and len(body["hits"]) == 3
    assert body["hits"][0]["id"] in {"lastfm:1", "musiccaps:abc"} and body["hits"][0]["rank"] == 1
    assert body["index"]["n_docs"] == 4
    p = httpx.post(f"{base}/v1/search", json={"query": "music", "k": 1, "mode": "dense", "user_id": 7, "user_weight": 10}).json()
    assert p["personalized"] and p["hits"][0]["id"] == "lastfm:2"


@pytest.mark.parametrize("body,status,message", [
    ({"query": ""}, 422, "at least 1 character"),
    ({"query": "  \t "}, 422, "query is empty"),
    ({"query": "x" * 513}, 422, "at most 512 characters"),
    ({"query": "x" * 100_000}, 422, "at most 512 characters"),
    ({"query": "rock", "k": 0}, 422, "greater than or equal to 1"),
    ({"query": "rock", "k": 101}, 422, "less than or equal to 100"),
    ({"query": "rock", "mode": "fuzzy"}, 422, "hybrid"),
    ({"query": "rock", "user_id": 12345}, 404, "unknown user_id 12345"),
    ({"query": "rock", "user_vector": [1.0, 2.0]}, 422, "2 dimensions, expected 384"),
    ({"query": "rock", "user_id": 7, "user_vector": [1.0]}, 422, "not both"),
    ({"quer": "rock"}, 422, "Field required"),
    ({"query": 42}, 422, "valid string"),
])
def test_bad_input_is_a_clear_4xx(server, body, status, message):
    base, _ = server
    r = httpx.post(f"{base}/v1/search", json=body)
    assert r.status_code == status, r.text
    assert message in r.text


def test_malformed_json_is_422(server):
    base, _ = server
    r = httpx.post(f"{base}/v1/search", content=b"{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_metrics(server):
    base, _ = server
    httpx.post(f"{base}/v1/search", json={"query": "metal", "mode": "bm25"})
    httpx.post(f"{base}/v1/search", json={"query": ""})
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)}
    reqs = {(s.labels["route"], s.labels["status"]): s.value for s in fams["musicml_requests"].samples if s.name.endswith("_total")}
    assert reqs[("/v1/search", "200")] >= 1 and reqs[("/v1/search", "422")] >= 1 and reqs[("/healthz", "200")] >= 1
    lat = [s for s in fams["musicml_request_duration_seconds"].samples
           if s.name.endswith("_count") and s.labels["route"] == "/v1/search"]
    assert lat and lat[0].value >= 2
    modes = {s.labels["mode"] for s in fams["musicml_search_duration_seconds"].samples if s.name.endswith("_count")}
    assert "bm25" in modes
    # bad input never produced a 500 (503 from /readyz while the index loaded is expected)
    assert not any(s.labels["status"] == "500" for s in fams["musicml_requests"].samples if "status" in s.labels)
    assert not any(s.labels["route"] == "/v1/search" and s.labels["status"].startswith("5")
                   for s in fams["musicml_requests"].samples if "status" in s.labels)
