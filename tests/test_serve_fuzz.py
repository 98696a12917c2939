"""Schema fuzzing of docs/openapi.json against the real server: no input may produce a 5xx."""
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from musicml.recipes.bundles import build_synthetic_trained_artifacts
from musicml.serve.loadgen import ServerProcess

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
SCHEMA = schemathesis.openapi.from_path(str(DOC))
OPS = [r.ok() for r in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    build_synthetic_trained_artifacts(models, "v1", n_users=100, n_items=300, n_interactions=4000)   # trained stages: the deepest path
    with ServerProcess(models, env={"MUSICML_SERVE_MAX_WAIT_MS": "0.5"}) as srv:
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
        if r.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} body={case.body!r} -> {r.status_code} {r.text[:200]}")
    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"{op.label} takes no input that could be invalid")
    assert calls and not failures, "\n".join(failures[:5])
