#!/usr/bin/env bash
# The test suite (set-up included). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
DFKD_SLURM=${DFKD_SLURM:-1} scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q "$@"
