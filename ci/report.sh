#!/usr/bin/env bash
# Set up .venv and run the benchmark reports with papermill: executed notebooks, JSON and plots under reports/, then
# the dashboard reports/index.html and reports/summary.json (musicml.bench.dashboard, via ci/report_index.py).
#
#   bash ci/report.sh [quick|full]        (or REPORT_PROFILE=quick|full; default quick)
#
# quick: every section with small budgets (about 10 minutes on 2 cores with a warm pip cache); its numbers show that
#        each report runs and what it measures, they are not comparable with full numbers.
# full:  the budgets the reports state their results with (about 1.5 hours on 2 cores).
# Every notebook gets `-p profile <profile>`, writes it into its JSON and shows it at the top of its page. A section
# that fails is recorded (reports/run.json, shown on the dashboard) and the run goes on; the exit status is then 1.
# Extra papermill options can be given in REPORT_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-${REPORT_PROFILE:-quick}}"
case "$profile" in quick|full) ;; *) echo "usage: bash ci/report.sh [quick|full] (got '$profile')" >&2; exit 2 ;; esac
[ -n "${MUSICML_DATA:-}" ] && export MUSICML_DATA="$(realpath "$MUSICML_DATA")"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
t_start=$(date +%s) load_start=$(cut -d" " -f1-3 /proc/loadavg)
bash ci/setup.sh
source .venv/bin/activate
mkdir -p reports
# The quick profile's budgets, appended after a section's own arguments (papermill: the last value of a name wins).
# They are the small settings the tests use (tests/test_*notebooks.py, ci/bench_smoke.sh), a little larger where cheap.
declare -A QUICK=(
  [model_quality]="-p grid default"
  [retrieval_ranking]="-p tt_epochs 3 -p ranker_epochs 2 -p ensemble 2"
  [model_comparison]="-p models '[\"Popularity\",\"ItemKNN\",\"EASE\"]' -p n_boot 300"
  [training_efficiency]="-p budget_minutes 0.25 -r scaling_sizes 100000 -r scaling_widths 32,64 -p scaling_steps 5"
  [data_memory]="-p synthetic_sizes '[1000,100000,1000000]' -p repeats 1"
  [scaling]="-y '{sizes: [100000], ray_sizes: [], workers: [2]}' -p train_epochs 1 -p lastfm_parity False"
  [data_scaling]="-y '{sizes: [100000, 1000000], ray_sizes: [1000000]}' -p evaluate_size 100000 -p refuse_limit 64M"
  [inference]="-r batch_sizes 1,16 -p iterations 100 -p min_time_s 0.1 -p p99_bound_ms 0 -p max_eval 300"
  [serving_load]="-p rps 40 -p duration 5 -r sweep_rps 20,40,80 -p sweep_duration 2 -p warmup 1 -p shadow_rps 40 -p shadow_duration 2 -p shadow_repeats 2 -p burst_size 10 -p burst_rps 40 -p burst_duration 2"
  [serving_cost]="-p repeats 5 -p warmup 1 -p requests_e2e 50 -p cpu_rps 40 -p cpu_duration 3"
  [compression]="-p teacher_dim 32 -p teacher_epochs 1 -p distill_epochs 1 -p finetune_epochs 1 -p structured_sparsities 0.5 -p magnitude_sparsities 0.5 -p latency_queries 50"
  [live_ab]="-p n_users 300 -p sessions 2 -p pre_sessions 1 -p canary_window_s 10 -p canary_min_requests 20"
  [ab_calibration]="-p n_sims 500 -p n_units 200 -p msprt_units 500 -p cuped_sims 500 -p cuped_rhos '[0.5,0.9]' -p hash_ids 100000 -p hash_buckets 100 -p interleaving_sizes '[100,400,1600]' -p interleaving_reps 30 -p rankers '[\"Popularity\",\"ItemKNN\"]'"
  [search_quality]="-p max_docs 1500 -p n_tag_queries 20 -p n_aspect_queries 40 -r query_backends fp32,onnx-int8 -r encoder_backends fp32,onnx-int8 -p encoder_docs 200 -r ann_kinds hnsw -p n_boot 200"
)
timings=() failed=()
run() {  # run NOTEBOOK [OUTDIR] [papermill -p args...]: executed notebook, JSON, plots and HTML in reports/OUTDIR
  local nb=$1 name=$1; shift
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then name=$1; shift; fi
  echo "== $name ($profile)"
  rm -rf "reports/$name"; mkdir -p "reports/$name"   # nothing left over from another profile's run
  local quick=() t0 rc=0
  local key=$name; [ "$nb" = inference_targets ] && key=inference
  [ "$profile" = quick ] && eval "quick=(${QUICK[$key]:-})"
  t0=$(date +%s)
  papermill "benchmarks_nbs/$nb.ipynb" "reports/$name/$nb.ipynb" -k musicml --cwd . \
    -p output_dir "reports/$name" "$@" "${quick[@]}" -p profile "$profile" ${REPORT_ARGS:-} || rc=$?
  [ "$rc" -eq 0 ] || { echo "FAIL: $name (papermill exit $rc; see reports/$name/$nb.ipynb)" >&2; failed+=("$name"); }
  jupyter nbconvert --to html --no-input "reports/$name/$nb.ipynb" --output-dir "reports/$name" >/dev/null 2>&1 || true
  timings+=("\"$name\": {\"wall_s\": $(( $(date +%s) - t0 )), \"ok\": $([ "$rc" -eq 0 ] && echo true || echo false)}")
}
# quality
run model_quality
run retrieval_ranking
run model_comparison
# training
run training_efficiency
run data_memory
run scaling -p lastfm_parity True
run data_scaling
# inference: trained SASRec and ranker artifacts, every cpu and edge variant; gpu ends with a message without a device
if [ "$profile" = quick ]; then  # small artifacts of their own (never reused by a full run): ~1 minute for both
  art=reports/artifacts/quick
  [ -f $art/sasrec/model/manifest.json ] || musicml train --model sasrec --out $art/sasrec --budget-s 20 --no-progress
  [ -f $art/ranker/model/manifest.json ] || musicml train --model ranker --recipe reference --epochs 2 --out $art/ranker --no-progress
else
  art=reports/artifacts
  [ -f $art/sasrec/model/manifest.json ] || musicml train --model sasrec --out $art/sasrec --no-progress
  [ -f $art/ranker/model/manifest.json ] || musicml train --model ranker --out $art/ranker --no-progress
fi
for t in cpu edge gpu; do run inference_targets "inference_${t}_sasrec" -p target "$t" -p artifact $art/sasrec/model; done
run inference_targets inference_cpu_ranker -p target cpu -p artifact $art/ranker/model
# serving: the real server on loopback over a bundle of the trained two-tower, SASRec and DCN (quiet machine wanted)
run serving_load -p ranker_artifact $art/ranker/model -p sasrec_artifact $art/sasrec/model
run serving_cost -p ranker_artifact $art/ranker/model -p sasrec_artifact $art/sasrec/model
run compression -p teacher_epochs 40 -p distill_epochs 40
# experimentation and search
run ab_calibration
run live_ab
run search_quality
wall=$(( $(date +%s) - t_start ))
( IFS=,; echo "{\"profile\": \"$profile\", \"started\": $t_start, \"wall_s\": $wall, \"load_average_start\": \"$load_start\", \"load_average_end\": \"$(cut -d" " -f1-3 /proc/loadavg)\", \"sections\": {${timings[*]}}}" ) > reports/run.json
python ci/report_index.py reports
echo "profile $profile: $((wall / 60)) min $((wall % 60)) s; reports written to $(pwd)/reports (open reports/index.html)"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED sections: ${failed[*]}" >&2; exit 1; fi
