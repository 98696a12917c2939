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
run() {  # run NOTEBOOK [OUTDIR] [papermill -p args...]: executed notebook, JSON, plots and HTML in reports/OUTDIR
  local nb=$1 name=$1; shift
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then name=$1; shift; fi
  echo "== $name"
  mkdir -p "reports/$name"
  papermill "benchmarks_nbs/$nb.ipynb" "reports/$name/$nb.ipynb" -k python3 --cwd . \
    -p output_dir "reports/$name" "$@" ${REPORT_ARGS:-}
  jupyter nbconvert --to html --no-input "reports/$name/$nb.ipynb" --output-dir "reports/$name" >/dev/null 2>&1 || true
}
# quality
run model_quality
run retrieval_ranking
run model_comparison
# training
run training_efficiency
run data_memory
run scaling -p lastfm_parity True
# inference: trained SASRec and ranker artifacts, every cpu and edge variant; gpu ends with a message without a device
[ -f reports/artifacts/sasrec/model/manifest.json ] || musicml train --model sasrec --out reports/artifacts/sasrec --no-progress
[ -f reports/artifacts/ranker/model/manifest.json ] || musicml train --model ranker --out reports/artifacts/ranker --no-progress
for t in cpu edge gpu; do run inference_targets "inference_${t}_sasrec" -p target "$t" -p artifact reports/artifacts/sasrec/model; done
run inference_targets inference_cpu_ranker -p target cpu -p artifact reports/artifacts/ranker/model
# serving: the real server on loopback over a bundle of the trained two-tower, SASRec and DCN (quiet machine wanted)
run serving_load -p ranker_artifact reports/artifacts/ranker/model -p sasrec_artifact reports/artifacts/sasrec/model
run compression -p teacher_epochs 40 -p distill_epochs 40
# experimentation and search
run ab_calibration
run search_quality
python ci/report_index.py reports
echo "reports written to $(pwd)/reports (open reports/index.html)"
