#!/usr/bin/env bash
# Set up .venv and run the whole test suite: notebook hygiene, ruff, the notebooks' own tests, then pytest.
# Data-dependent tests read $MUSICML_DATA (a folder holding hetrec2011-lastfm-2k/ and musiccaps/) and skip without it.
# Extra arguments go to pytest (e.g. `bash ci/test.sh -k cli`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MUSICML_DATA:-}" ] && export MUSICML_DATA="$(realpath "$MUSICML_DATA")"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export MUSICML_CACHE="${MUSICML_CACHE:-$PWD/.cache/musicml}"
start=$SECONDS
bash ci/setup.sh
source .venv/bin/activate
# promtool (Debian's prometheus package) checks ops/alerts.yml; the ops tests skip without it.
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
    || echo "warning: could not install promtool; alert-rule checks will be skipped"
fi
# chromium (Debian's package) renders the benchmark dashboard in tests/test_dashboard.py; those tests skip without it.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "warning: could not install chromium; the dashboard screenshot tests will be skipped"
fi
echo "== notebook hygiene"; bash ci/check_nbs.sh
echo "== ruff"; ruff check musicml tests
echo "== nbdev-test"; nbdev-test --n-workers 2 --timing
echo "== pytest"
rc=0; pytest -q -rs "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  if [ "$#" -gt 0 ]; then echo "pytest: no test matched the selection '$*'"; rc=0
  else echo "FAIL: pytest collected no tests; the suite under tests/ is missing" >&2; rc=1; fi
fi
if [ "$rc" -eq 0 ] && [ "$#" -eq 0 ]; then
  echo "== inference reports (cpu, edge; gpu where present) with small iteration counts, compared with the stored baselines"
  bash ci/bench_smoke.sh || rc=$?
fi
echo "== done in $((SECONDS - start)) s (exit $rc)"
exit $rc
