#!/usr/bin/env bash
# The main job: the default config.yaml experiment end to end (set-up included).
# Extra arguments go to snakemake, e.g. `scripts/main.sh -n` for a dry run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec snakemake --cores all --workflow-profile none "$@"
