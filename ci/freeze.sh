#!/usr/bin/env bash
# Rewrite constraints.txt from the current .venv (run after adding a dependency and installing it).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Pinned versions for a reproducible install; every pip install in README, ci/ and .ci/run uses '-c constraints.txt'."
  echo "# torch must also be named as 'torch==2.13.0' on the same pip command line (an unpinned torch pulls a multi-GB CUDA build)."
  echo "# Regenerate after changing dependencies: bash ci/freeze.sh"
  .venv/bin/pip freeze --exclude-editable | grep -v -i '^musicml' | sed 's/^torch==\(.*\)+cpu$/torch==\1/'
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
