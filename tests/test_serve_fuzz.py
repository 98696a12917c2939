"""Schema fuzzing of docs/openapi.json against the real server: no input may produce a 5xx."""
import copy
import json
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from musicml.recipes.bundles import build_synthetic_trained_artifacts
from musicml.serve.errors import ErrorV1
from musicml.serve.loadgen import ServerProcess

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
SCHEMA = schemathesis.openapi.from_path(str(DOC))
OPS = [r.ok() for r in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_synthetic_trained_artifacts(models, "v1", n_users=100, n_items=300, n_interactions=4000)   # trained stages: the deepest path
    outcomes = tmp_path_factory.mktemp("outcomes")                   # POST /v1/events stores what it accepts
    with ServerProcess(models, env={"MUSICML_SERVE_MAX_WAIT_MS": "0.5", "MUSICML_SERVE_OUTCOME_LOG": str(outcomes)}) as srv:
        yield srv


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("op", OPS, ids=[op.label for op in OPS])
def test_no_server_errors(server, op, mode):
    session = requests.Session()
    failures, calls = [], []

    @settings(max_examples=30, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        r = case.call(base_url=server.url, session=session, timeout=10)
        calls.append(r.status_code)
        _check_error(r, failures, f"{case.method} {case.formatted_path} body={case.body!r}")   # no 5xx; 4xx in the one shape
    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"{op.label} takes no input that could be invalid")
    assert calls and not failures, "\n".join(failures[:5])


# Schemathesis generates what the schema allows and, negated, what it forbids, but JSON Schema has no NaN, Infinity or
# lone surrogates, and those were what made the service answer 500. The wider run takes schemathesis' cases and puts
# such values (and other odd ones) at random places in them, then sends them as the JSON text a careless client writes.
ODD = [float("nan"), float("inf"), float("-inf"), 1e400, -0.0, 2**63, -(2**31) - 1, True, False, None, "\ud800", "\udfff\ud800",
       "\x00", "é" * 3, "𝄞", " ", "", "NaN", "1e400", [], {}, [[[]]], {"\ud800": 1}]
BODY_OPS = [op for op in OPS if op.method.upper() == "POST" and op.body]


def _leaves(x, path=()):
    "Every path into a JSON value (the value itself included)."
    yield path
    if isinstance(x, dict):
        for k, v in x.items(): yield from _leaves(v, (*path, k))
    elif isinstance(x, list):
        for i, v in enumerate(x): yield from _leaves(v, (*path, i))


def _put(x, path, value):
    if not path: return value
    x = copy.deepcopy(x); cur = x
    for p in path[:-1]: cur = cur[p]
    cur[path[-1]] = value
    return x


def _check_error(r, failures, sent):
    if r.status_code >= 500: failures.append(f"{sent[:200]!r} -> {r.status_code} {r.text[:200]}"); return
    if r.status_code >= 400:
        try:
            body = ErrorV1.model_validate(r.json())
            rid = r.headers.get("x-request-id")
            rid = rid[0] if isinstance(rid, list) else rid                 # schemathesis' responses hold header lists
            if body.request_id != rid:
                failures.append(f"{sent[:200]!r}: request id {body.request_id!r} differs from the header {rid!r}")
        except ValueError as e: failures.append(f"{sent[:200]!r} -> {r.status_code} not in the error shape: {e}; {r.text[:200]}")


@pytest.mark.parametrize("op", BODY_OPS, ids=[op.label for op in BODY_OPS])
def test_no_server_errors_with_non_finite_numbers_and_odd_strings(server, op):
    session, failures, calls = requests.Session(), [], []

    @settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE), data=st.data())
    def run(case, data):
        body = case.body
        for _ in range(data.draw(st.integers(1, 3))):
            body = _put(body, data.draw(st.sampled_from(list(_leaves(body)))), data.draw(st.sampled_from(ODD)))
        sent = json.dumps(body, allow_nan=True)                  # NaN / Infinity as JSON parsers accept them; \ud800 escaped
        r = session.post(server.url + case.formatted_path, data=sent, headers={"content-type": "application/json"}, timeout=10)
        calls.append(r.status_code); _check_error(r, failures, sent)
    run()
    assert calls and not failures, "\n".join(failures[:5])
    assert any(400 <= c < 500 for c in calls), "no case was refused: the odd values did not reach the schema"
