"""Alerting rules (promtool), runbook coverage and the Grafana dashboard refer to metrics the service exports."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from musicml.serve.drift import DriftMonitor
from musicml.serve.metrics import ServeMetrics

ROOT = Path(__file__).resolve().parents[1]
ALERTS, RUNBOOK, DASH = ROOT / "ops" / "alerts.yml", ROOT / "docs" / "runbook.md", ROOT / "ops" / "grafana-dashboard.json"


def _exported() -> set[str]:
    "Sample names the service exposes (histogram/counter suffixes included)."
    m = ServeMetrics()
    m.set_model("v", ["x"], 0.0)
    for c in (m.requests.labels("r", "GET", "200"), m.fallbacks.labels("s", "r"), m.responses.labels("p"),
              m.load_failures.labels("r"), m.reloads.labels("r"), m.canary_rollbacks.labels("a", "p99")): c.inc()
    for h in (m.latency.labels("r", "2xx"), m.stage.labels("s"), m.batch_size.labels("s"), m.batch_seconds.labels("s"),
              m.search_seconds.labels("m")): h.observe(1)
    d = DriftMonitor(m.registry)
    for c in (d.m.users.labels("v"), d.m.unknown_users.labels("v"), d.m.artists.labels("v", "s"), d.m.unknown_artists.labels("v", "s")): c.inc()
    for h in (d.m.history.labels("v"), d.m.top_score.labels("v"), d.m.decile.labels("v")): h.observe(1)
    for g in (d.m.psi.labels("v", "s"), d.m.reference.labels("v"), d.m.window.labels("v", "s")): g.set(1)
    names = set(re.findall(r"^(musicml_[a-z_]+)", generate_latest(m.registry).decode(), re.M))
    return names


def _rules():
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package: prometheus)")
def test_promtool_checks_and_unit_tests_the_rules():
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        p = subprocess.run(["promtool", *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr


def test_rules_use_only_exported_metrics_and_recording_rules():
    exported, rules = _exported(), _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        for name in re.findall(r"\b(musicml[_:][a-z0-9_:]+)", r["expr"]):
            assert name in exported or name in recorded, f"{r.get('alert', r.get('record'))}: unknown metric {name}"


def test_every_alert_has_a_runbook_section_and_the_required_alerts_exist():
    alerts = [r for r in _rules() if "alert" in r]
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)}
    for a in alerts:
        assert a["alert"].lower() in headings, f"no runbook section for {a['alert']}"
        assert a["annotations"]["runbook_url"] == f"docs/runbook.md#{a['alert'].lower()}"
        assert a["labels"]["severity"] in ("page", "ticket", "warning")
    text = " ".join(r["expr"] for r in _rules())
    for needle in ("le=\"0.05\"", "status=~\"5..\"", "musicml_recommendation_responses_total", "musicml_model_created_timestamp_seconds",
                   "musicml_ready"):
        assert needle in text, needle      # latency SLO burn, error rate, fallback rate, staleness, readiness


def test_dashboard_queries_use_exported_metrics():
    d = json.loads(DASH.read_text())
    exported = _exported() | {r["record"] for r in _rules() if "record" in r}
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for e in exprs:
        for name in re.findall(r"\b(musicml[_:][a-z0-9_:]+)", e):
            assert name in exported, f"dashboard uses unknown metric {name}"
