#!/usr/bin/env bash
# Set up everything dfkd needs on a fresh Debian machine; safe to run twice.
# - Debian packages (as root, where missing and possible): the Fashion-MNIST dataset.
# - A virtual environment .venv with torch/torchvision (the versions on this machine's disk),
#   dfkd and its test dependencies.
# Set DFKD_SLURM=1 to also install the SLURM test cluster packages (slurmctld slurmd munge).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
if [ "${DFKD_SLURM:-0}" = 1 ]; then
  for cmd in slurmctld slurmd sinfo munged; do command -v "$cmd" >/dev/null || { apt_packages+=(slurmctld slurmd slurm-client munge); break; }; done
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "setup: missing Debian packages ${apt_packages[*]} (run as root, or install them yourself)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.dfkd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # This machine's pip config points at local wheel folders that may not exist: hide that noise.
  pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }
  pip_install --upgrade pip
  pip_install torch==2.14.1 torchvision==0.29.1
  pip_install -e '.[test,slurm]' pygments snakefmt
  .venv/bin/python -c "import dfkd, torch, torchvision, snakemake, h5py, pyarrow"
  touch "$stamp"
fi
