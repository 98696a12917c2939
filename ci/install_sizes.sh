#!/usr/bin/env bash
# What each extra adds to a base install: for each extra, a fresh venv gets `musicml[EXTRA]` (pinned by constraints.txt,
# torch named where the extra pulls it) and we record its size (du of the venv) and the pip time, against a base-only venv.
# Prints a Markdown table (the README's "Install size" table comes from it). Needs network or a warm pip cache; ~10 min.
# usage: bash ci/install_sizes.sh [extra ...]      (default: every extra but dev)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=("$@"); [ ${#extras[@]} -gt 0 ] || extras=(base serve train onnx search experiment edge dist lab)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "| install | venv size (MB) | added to base (MB) | pip time (s, warm cache) | torch |"
echo "|---|---|---|---|---|"
base_mb=""
for e in "${extras[@]}"; do
  v="$work/$e"; "$PY" -m venv "$v"; "$v/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1
  spec="."; [ "$e" = base ] || spec=".[$e]"
  torch=(); grep -q "^$e = .*torch" pyproject.toml && torch=("torch==2.13.0")
  t0=$(date +%s.%N)
  "$v/bin/python" -m pip install -q -c constraints.txt "${torch[@]}" "$spec" >/dev/null 2>&1
  t=$(echo "$(date +%s.%N) - $t0" | bc)
  mb=$(du -sm "$v" | cut -f1); [ -n "$base_mb" ] || base_mb=$mb
  has=$("$v/bin/python" -c "import importlib.util as u; print('yes' if u.find_spec('torch') else 'no')")
  printf '| %s | %s | %s | %.0f | %s |\n' "$([ "$e" = base ] && echo 'musicml' || echo "musicml[$e]")" "$mb" "$((mb - base_mb))" "$t" "$has"
  rm -rf "$v"
done
