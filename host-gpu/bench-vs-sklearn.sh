#!/usr/bin/env bash
# Compares weir's CPU trainers with scikit-learn on the same generated data.
# Installs scikit-learn into a venv under target/ (PyPI), then runs the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sklearn-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet scikit-learn numpy
fi
WEIR_SKLEARN_PYTHON="$PWD/$venv/bin/python" cargo bench -p weir-host-gpu --bench trainers
