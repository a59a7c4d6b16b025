#!/usr/bin/env bash
# Create the RecBole peer venv at benchmarks/peers/.venv-recbole from PyPI.
#
# RecBole 1.2.1 needs numpy<2 (its ray import breaks on numpy 2) and an older pandas,
# which conflict with shelfwise's own venv, so it lives in a venv of its own. torch is pinned
# to the project's CPU build via PIP_CONSTRAINT so pip never pulls a CUDA wheel.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$here/.venv-recbole"
python="${PYTHON:-python3.11}"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import recbole, torch" 2>/dev/null; then
    echo "recbole venv already set up at $venv"
    exit 0
fi
"$python" -m venv "$venv"
export PIP_CONSTRAINT="$repo/constraints.txt"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "torch==2.13.0"  # same source as `make setup` (CPU build here)
"$venv/bin/pip" install --quiet "recbole==1.2.1" "numpy<2" "pandas<2.3" "setuptools<81"
"$venv/bin/python" -c "import recbole, torch, numpy; print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
