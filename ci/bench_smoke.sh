#!/usr/bin/env bash
# The inference reports with small iteration counts, as CI runs them: cpu and edge on the tiny synthetic SASRec (no
# training), gpu only where `nvidia-smi` sees a device. Each result is compared with the stored baseline in
# benchmarks_nbs/baselines/ (quality to 0.02 absolute, median latency and throughput with a wide tolerance: CI machines
# are noisy). int8 kernels differ between CPU generations (AVX2 vs AVX-512/VNNI: up to 0.006 in top-10 overlap on the
# tiny model), so quality cannot be held to the third decimal across machines; real breakage is far larger (8-bit ONNX
# Runtime weights on an AVX2-only CPU cost 0.11 of overlap).
# Writes under ${BENCH_OUT:-.ci-out/inference}. Run from anywhere; expects the venv from ci/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && source .venv/bin/activate
export MPLBACKEND=Agg RAY_USAGE_STATS_ENABLED=0
out="${BENCH_OUT:-.ci-out/inference}"
targets="cpu edge"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then targets="$targets gpu"; fi
rc=0
for t in $targets; do
  mkdir -p "$out/$t"
  echo "-- inference report, target $t (tiny model, small iteration counts)"
  papermill benchmarks_nbs/inference_targets.ipynb "$out/$t/inference_targets.ipynb" -k musicml --cwd . --no-progress-bar \
    -p target "$t" -p train_budget_s 0 -p batch_sizes "1,16" -p iterations 200 -p min_time_s 0.1 -p p99_bound_ms 0 -p output_dir "$out/$t" \
    >"$out/$t/papermill.log" 2>&1 || { echo "FAIL: inference report for $t (see $out/$t/papermill.log)" >&2; tail -20 "$out/$t/papermill.log" >&2; rc=1; continue; }
  base="benchmarks_nbs/baselines/inference_${t}_tiny.json"
  if [ -f "$base" ]; then
    # medians, throughput and quality gate; tails (p99, server) are printed by a full compare but too noisy for CI
    musicml bench compare "$out/$t/inference_$t.json" "$base" --tolerance "${BENCH_TOLERANCE:-3.0}" \
      --quality-tol "${BENCH_QUALITY_TOL:-0.02}" --metrics "${BENCH_METRICS:-p50_ms,best_items_per_s,ndcg@10,top10_overlap}" || rc=1
  else
    echo "no stored baseline $base: nothing to compare"
  fi
done
exit $rc
