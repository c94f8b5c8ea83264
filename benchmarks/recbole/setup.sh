#!/usr/bin/env bash
# Create the RecBole side-by-side venv at benchmarks/.recbole-venv (git-ignored). Idempotent:
# does nothing when the venv exists and imports recbole (quick_start included, which pulls in ray).
#
#   benchmarks/recbole/setup.sh
#   TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 benchmarks/.recbole-venv/bin/python \
#       benchmarks/recbole/run_recbole.py --model BPR --seed 2020
#
# Pins: torch 2.13.0 (the CPU wheel on this machine's disk) needs setuptools>=77.0.3, and
# ray 2.6.3 (a RecBole dependency, imported by recbole.quick_start) needs pkg_resources,
# which setuptools removed in 81; hence setuptools>=77.0.3,<81 (not <70, which conflicts).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RECBOLE_VENV:-$here/../.recbole-venv}"
python="${PYTHON:-python3.11}"

check() {
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$venv/bin/python" -W ignore -c \
        'import recbole, recbole.quick_start, torch; print("recbole", recbole.__version__, "torch", torch.__version__)'
}

if [ -x "$venv/bin/python" ] && check >/dev/null 2>&1; then
    echo "recbole venv ready: $venv ($(check 2>/dev/null))"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q \
    recbole==1.2.1 torch==2.13.0 "numpy<2" "pyarrow==17.0.0" "pandas<2.3" "scipy<1.14" "setuptools>=77.0.3,<81"
echo "recbole venv created: $venv ($(check))"
