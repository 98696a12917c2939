"""A careless or hostile client against the real server on loopback: no input may produce a 5xx, every error body has
the one shape (`serve.errors.ErrorV1`) with the request id, bodies are limited on the stream, stalled connections
are closed, and every log line is JSON."""
import json
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from musicml.artifacts import load_arrays
from musicml.recipes.bundles import build_synthetic_artifacts
from musicml.serve.errors import ErrorV1
from musicml.serve.loadgen import ServerProcess

TIMEOUTS = {"MUSICML_SERVE_HEADER_TIMEOUT_S": "1", "MUSICML_SERVE_BODY_TIMEOUT_S": "1", "MUSICML_SERVE_KEEPALIVE_TIMEOUT_S": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models, log = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("logs") / "server.log"
    d = build_synthetic_artifacts(models, "v1")
    with ServerProcess(models, env={"MUSICML_SERVE_MAX_WAIT_MS": "0.5", "MUSICML_SERVE_ACCESS_LOG": "true", **TIMEOUTS},
                       log_path=log) as srv:
        cat = load_arrays(d / "catalog.npz")
        srv.log, srv.user, srv.artist = log, int(cat["user_ids"][0]), int(cat["item_ids"][0])
        yield srv


def raw_post(srv, path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(srv.url + path, content=body, headers={"content-type": content_type, "x-request-id": "hostile-1"}, timeout=10)


def assert_error_shape(r: httpx.Response, status: int | None = None, field: str | None = None):
    "A 4xx in the one shape, with the request id of the header, quoting no more than a short prefix of the input."
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None: assert r.status_code == status, (r.status_code, r.text[:300])
    body = ErrorV1.model_validate(r.json())
    assert body.request_id and body.request_id == r.headers["x-request-id"]
    assert len(r.content) < 4000, len(r.content)
    if field is not None: assert body.field == field, body
    return body


# every number field of the two POST routes, and their strings, with values JSON parsing accepts but a schema must refuse
NUMBER_FIELDS = {
    "/v1/recommendations": ['{"user_id": %s}', '{"user_id": 1, "k": %s}', '{"user_id": 1, "diversity": %s}',
                            '{"user_id": 1, "filters": {"min_listeners": %s}}', '{"recent_artist_ids": [%s]}',
                            '{"user_id": 1, "filters": {"exclude_artist_ids": [%s]}}'],
    "/v1/rank": ['{"user_id": %s, "candidate_ids": [1]}', '{"user_id": 1, "candidate_ids": [%s]}',
                 '{"recent_artist_ids": [%s], "candidate_ids": [1]}'],
}
FIELD = {"user_id": "body.user_id", "k": "body.k", "diversity": "body.diversity", "min_listeners": "body.filters.min_listeners",
         "recent_artist_ids": "body.recent_artist_ids.0", "exclude_artist_ids": "body.filters.exclude_artist_ids.0",
         "candidate_ids": "body.candidate_ids.0"}
CASES = [(path, tpl, v) for path, tpls in NUMBER_FIELDS.items() for tpl in tpls
         for v in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "true", '"5"', '"\\ud800"', "1.5", "1e30", "[]")]


@pytest.mark.parametrize("path,tpl,value", CASES, ids=[f"{p}:{t.split(':')[-2][-14:]}:{v}" for p, t, v in CASES])
def test_number_fields_refuse_non_finite_coerced_and_odd_values_with_a_422_naming_the_field(server, path, tpl, value):
    body = (tpl % value).encode()
    key = next(k for k in FIELD if f'"{k}": %s' in tpl or f'"{k}": [%s]' in tpl)
    r = raw_post(server, path, body)
    assert_error_shape(r, 422)
    assert r.json()["field"].startswith(FIELD[key].rsplit(".0", 1)[0]), (r.json(), body)


@pytest.mark.parametrize("body,content_type", [
    (b'{"user_id": "\\ud800"}', "application/json"),                 # a lone surrogate, as JSON escapes it
    (b'{"\\udfff": 1, "user_id": 1}', "application/json"),           # ... in a key (an unknown field)
    (b'{"user_id": 1, "k": 10, "k": "x"}', "application/json"),      # a duplicate key
    (b"\xff\xfe{\x00", "application/json"),                           # not UTF-8
    (b"{bad", "application/json"),
    (b"", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"just a string"', "application/json"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),          # deep enough to break a recursive parser
    (b'{"user_id": 1}', "text/plain"),
    (b"user_id=1", "application/x-www-form-urlencoded"),
    (b'{"user_id": 123456789012345678901234567890}', "application/json"),
])
def test_malformed_bodies_get_a_4xx_in_the_one_shape(server, body, content_type):
    for path in ("/v1/recommendations", "/v1/rank"):
        assert_error_shape(raw_post(server, path, body, content_type))


def test_a_large_input_is_never_echoed(server):
    r = raw_post(server, "/v1/recommendations", json.dumps({"user_id": "x" * 900_000}).encode())
    body = assert_error_shape(r, 422, "body.user_id")
    assert "xxx..." in body.message and len(r.content) < 1000


def test_path_and_query_parameters(server):
    for url in ("/v1/artists/NaN/similar", "/v1/artists/1e400/similar", "/v1/artists/-1/similar", "/v1/artists/%ED%A0%80/similar",
                f"/v1/artists/{server.artist}/similar?k=NaN", f"/v1/artists/{server.artist}/similar?k=%00",
                "/v1/artists/2000000000/similar", "/nowhere", "/admin/reload?version=..%2F..%2Fetc"):
        r = httpx.request("POST" if url.startswith("/admin") else "GET", server.url + url, timeout=10)
        assert_error_shape(r)
    assert_error_shape(httpx.delete(server.url + "/v1/recommendations", timeout=10), 405)


def test_rank_ranks_known_candidates_and_reports_unknown_ones(server):
    r = raw_post(server, "/v1/rank", json.dumps({"user_id": server.user, "candidate_ids": [server.artist, 2_000_000_000]}).encode())
    assert r.status_code == 200
    assert [x["artist_id"] for x in r.json()["items"]] == [server.artist] and r.json()["unknown_candidate_ids"] == [2_000_000_000]
    r = raw_post(server, "/v1/rank", json.dumps({"user_id": server.user, "candidate_ids": [2_000_000_001]}).encode())
    assert r.status_code == 200 and r.json()["items"] == [] and r.json()["unknown_candidate_ids"] == [2_000_000_001]


def _exchange(srv, payload: bytes, then: bytes = b"", wait: float = 0.0, limit: float = 6.0) -> tuple[bytes, float]:
    "Send `payload` on a raw connection, then `then` after `wait` s; (everything the server sent until it closed, seconds)."
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.settimeout(limit); t = time.perf_counter()
        s.sendall(payload)
        if then: time.sleep(wait); s.sendall(then)
        out = b""
        try:
            while chunk := s.recv(65536): out += chunk
        except (ConnectionResetError, TimeoutError): pass
        return out, time.perf_counter() - t


def test_declared_oversized_body_is_refused_before_it_is_sent(server):
    out, _ = _exchange(server, b"POST /v1/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413") and b'"code": "body_too_large"' in out, out[:300]


def test_chunked_body_is_limited_on_the_stream(server):
    head = b"POST /v1/recommendations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.settimeout(10); s.sendall(head); sent = 0
        try:
            while sent < 50 << 20:                              # a 50 MB body, unless the server answers first
                s.sendall(chunk); sent += 65536
        except (BrokenPipeError, ConnectionResetError): pass
        out = s.recv(65536)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert sent < 8 << 20, f"the server read {sent} bytes before refusing"


def test_stalled_body_gets_408_and_stalled_headers_or_idle_connections_are_closed(server):
    out, dt = _exchange(server, b"POST /v1/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
    assert out.startswith(b"HTTP/1.1 408") and b'"code": "request_timeout"' in out and 0.8 < dt < 4, (out[:200], dt)
    out, dt = _exchange(server, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")          # headers never finished
    assert out == b"" and 0.8 < dt < 4, (out, dt)
    out, dt = _exchange(server, b"")                                               # connected, said nothing
    assert out == b"" and 0.8 < dt < 4, (out, dt)
    out, dt = _exchange(server, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")      # answered, then idle keep-alive
    assert out.startswith(b"HTTP/1.1 200") and 0.8 < dt < 4, (out[:100], dt)


def test_every_route_is_labelled_and_latency_has_a_status_class(server):
    for p in ("/docs", "/openapi.json", "/healthz"): httpx.get(server.url + p, timeout=10)
    raw_post(server, "/v1/rank", b"x" * (2 << 20))                                  # 413 before routing
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    reqs = {(s.labels["route"], s.labels["status"]) for s in fams["musicml_requests"].samples if s.name.endswith("_total")}
    assert {("/docs", "200"), ("/openapi.json", "200"), ("/v1/rank", "413")} <= reqs, reqs
    assert not any(r == "unmatched" and st != "404" for r, st in reqs), reqs          # only unknown paths are unmatched
    lat = {(s.labels["route"], s.labels["status"]) for s in fams["musicml_request_duration_seconds"].samples if s.name.endswith("_count")}
    assert ("/v1/recommendations", "4xx") in lat and ("/healthz", "2xx") in lat, lat
    failures = {s.labels["reason"]: s.value for s in fams["musicml_model_load_failures"].samples if s.name.endswith("_total")}
    assert failures == {"invalid": 0.0, "sense": 0.0, "error": 0.0}                   # exported at 0 before any failure


def test_no_5xx_was_answered_and_every_log_line_is_json(server):
    fams = {f.name: f for f in text_string_to_metric_families(httpx.get(server.url + "/metrics").text)}
    statuses = {s.labels["status"] for s in fams["musicml_requests"].samples if s.name.endswith("_total") and s.value > 0}
    # /readyz answers 503 by design until the bundle is loaded and warmed (ServerProcess polls it at start on a busy machine)
    fives = {s.labels["route"] + " " + s.labels["status"]: s.value for s in fams["musicml_requests"].samples
             if s.name.endswith("_total") and s.value > 0 and s.labels["status"].startswith("5")
             and (s.labels["route"], s.labels["status"]) != ("/readyz", "503")}
    assert statuses and not fives, (fives, server.log.read_text()[-3000:])
    lines = [ln for ln in server.log.read_text(errors="replace").splitlines() if ln.strip()]
    assert lines, "the server logged nothing"
    bad = [ln for ln in lines if not ln.startswith("{")]
    assert not bad, bad[:5]
    for ln in lines: json.loads(ln)
