#!/usr/bin/env bash
# dfkd's CUDA paths checked and timed in one command, from the repository root
# (what it runs and records: benchmarks/device_check.py; how to run it: benchmarks/README.md, "GPU").
#
#   benchmarks/device_check.sh          # on a CUDA machine: < 8 min on an H200; results in $OUT (default device_out/)
#   benchmarks/device_check.sh --cpu    # tiny sizes on a CPU (tests/test_device_check.py)
#
# Where the Python (PYTHON, default python3) lacks dfkd's dependencies, as on the GPU machine,
# they are installed from the wheels in .whl/ (benchmarks/prepare_device_wheels.sh) into
# /tmp/site, without network. dfkd itself runs from this checkout (PYTHONPATH, no build), and
# Fashion-MNIST is read from .whl/fashion-mnist when that folder is there (else pass --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-device_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if ! "$PY" -c "import snakemake, jsonschema" 2>/dev/null; then
  compgen -G ".whl/*.whl" >/dev/null || { echo "device_check: $PY lacks snakemake and .whl/ holds no wheels (run benchmarks/prepare_device_wheels.sh)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
data=()
[ -d .whl/fashion-mnist ] && data=(--data .whl/fashion-mnist)
"$PY" benchmarks/device_check.py "${data[@]}" "$@" 2>&1 | tee "$OUT/device_check.log"
