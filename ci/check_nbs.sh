#!/usr/bin/env bash
# Fail when nbdev-clean or nbdev-export would change anything: notebooks must be clean and the library in sync.
set -euo pipefail
cd "$(dirname "$0")/.."
state() { git status --porcelain --untracked-files=all -- nbs benchmarks_nbs musicml; git diff -- nbs benchmarks_nbs musicml | sha256sum; }
before=$(state)
nbdev-clean >/dev/null
nbdev-clean --fname benchmarks_nbs >/dev/null
if [ "$before" != "$(state)" ]; then
  echo "FAIL: unstripped notebooks: nbdev-clean changed these files (run nbdev-clean and commit):" >&2
  git status --porcelain --untracked-files=all -- nbs benchmarks_nbs >&2; exit 1
fi
nbdev-export >/dev/null
if [ "$before" != "$(state)" ]; then
  echo "FAIL: notebooks and library out of sync: nbdev-export changed these files (run nbdev-export and commit):" >&2
  git status --porcelain --untracked-files=all -- musicml >&2; exit 1
fi
echo "notebooks clean, library in sync"
