#!/usr/bin/env bash
# Create .venv (if missing), install musicml with every extra the tests, reports and tutorials use (JupyterLab included),
# pinned by constraints.txt, and register the venv as the Jupyter kernel `musicml`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is named explicitly (with the constraints file) so pip never resolves a CUDA build.
# (grep drops this machine's noise about missing local mirror folders; pipefail keeps pip's exit status)
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" -e ".[dev,train,serve,search,experiment,onnx,edge,dist,lab]" 2>&1 \
  | { grep -v -e "^WARNING: Location 'file://" -e "is neither a file nor a directory" || true; }
# the `musicml` Jupyter kernel: this venv's python, registered inside the venv (JupyterLab, papermill -k musicml, the tests)
.venv/bin/python -m ipykernel install --sys-prefix --name musicml --display-name "musicml (.venv)" >/dev/null
.venv/bin/python -c "import musicml, torch; print('musicml', musicml.__version__, '| torch', torch.__version__)"
