#!/usr/bin/env bash
# Set up .venv and run the benchmark reports with papermill: executed notebooks, JSON and plots under reports/,
# plus reports/index.html linking them. Extra papermill options can be given in REPORT_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${MUSICML_DATA:-}" ] && export MUSICML_DATA="$(realpath "$MUSICML_DATA")"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
bash ci/setup.sh
source .venv/bin/activate
mkdir -p reports
run() {  # run NAME [papermill -p args...]
  local name=$1; shift
  echo "== $name"
  mkdir -p "reports/$name"
  papermill "benchmarks_nbs/$name.ipynb" "reports/$name/$name.ipynb" -k python3 --cwd . \
    -p output_dir "reports/$name" "$@" ${REPORT_ARGS:-}
  jupyter nbconvert --to html --no-input "reports/$name/$name.ipynb" --output-dir "reports/$name" >/dev/null 2>&1 || true
}
run model_quality
run training_efficiency
run retrieval_ranking
run model_comparison
run data_memory
run ab_calibration
run search_quality
python ci/report_index.py reports
echo "reports written to $(pwd)/reports (open reports/index.html)"
