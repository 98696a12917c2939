"""The committed OpenAPI document is the v1 contract: the app must still satisfy it (no breaking change)."""
import json
from pathlib import Path

from musicml.serve.app import breaking_changes, openapi_document

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"
REGEN = "python -c 'from musicml.serve.app import write_openapi; write_openapi()'"


def test_no_breaking_change_against_the_committed_contract():
    old = json.loads(DOC.read_text())
    problems = breaking_changes(old, openapi_document())
    assert not problems, "breaking API changes (bump to /v2 instead):\n" + "\n".join(problems)


def test_committed_document_is_current():
    assert json.loads(DOC.read_text()) == json.loads(json.dumps(openapi_document())), \
        f"docs/openapi.json is out of date; review the diff and regenerate with: {REGEN}"


def test_the_checker_catches_breaking_changes():
    old = json.loads(DOC.read_text()); new = json.loads(DOC.read_text())
    req = new["components"]["schemas"]["RecommendationRequestV1"]
    req["properties"]["k"]["maximum"] = 50
    req["properties"]["diversity"] = {"type": "string"}
    del new["components"]["schemas"]["RecommendationResponseV1"]["properties"]["degraded"]
    new["paths"]["/v1/artists/{artist_id}/similar"]["get"]["parameters"].append(
        {"name": "lang", "in": "query", "required": True, "schema": {"type": "string"}})
    got = "\n".join(breaking_changes(old, new))
    for needle in ("k: maximum lowered", "diversity: type changed", "removed property degraded", "new required parameter lang"):
        assert needle in got, got
