#!/usr/bin/env bash
# Prepare the git-ignored folder .whl/ that benchmarks/device_check.sh carries to a GPU machine
# without network: wheels of every dfkd dependency that machine lacks, and Fashion-MNIST's IDX files.
#
#   benchmarks/prepare_device_wheels.sh            # here, once, with network to PyPI
#   PYVER=3.12 DATA=/usr/share/datasets/fashion-mnist benchmarks/prepare_device_wheels.sh
#
# The GPU machine's Python is 3.12 (/opt/torch/.venv/bin/python3, with torch and torchvision), as
# /work/.library/device/KINDS.md records ("pip list, as a session saw it"); PRESENT below is that
# file's "Python packages already there" list. The list of wheels is the closure of dfkd's
# Requires-Dist over the packages installed in .venv (their versions, so the GPU machine runs
# what the tests run here), minus PRESENT, minus SKIP. torch and torchvision are never fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
MAX_WHEELS_MIB=40   # the device tool carries 64 MiB in all: wheels + data (~30 MiB) + the tree
MAX_TOTAL_MIB=60

# Packages the GPU image already holds (KINDS.md, read 2026-11-17).
PRESENT="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
# pulp (16 MiB) serves only Snakemake's ILP scheduler; device_check runs `--scheduler greedy`, and
# Snakemake imports pulp lazily (ImportError is handled).
SKIP="pulp"
# Carried although the image has them: pure Python, small, and carried packages ask for versions the
# image's may not meet (pydantic: typing-extensions>=4.16.0; snakemake: packaging<26). They load first.
CARRY_ANYWAY="typing-extensions packaging"

[ -x "$PY" ] || { echo "prepare_device_wheels: $PY not found; run scripts/setup.sh first" >&2; exit 1; }
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$DATA/$f" ] || { echo "prepare_device_wheels: $DATA/$f missing (apt-get install dataset-fashion-mnist, or set DATA)" >&2; exit 1; }
done

# 1. name==version of every missing dependency (markers evaluated for Linux x86_64, Python $PYVER)
wanted=$(PRESENT="$PRESENT" SKIP="$SKIP" CARRY_ANYWAY="$CARRY_ANYWAY" PYVER="$PYVER" "$PY" - <<'EOF'
import os, re
from importlib import metadata
from packaging.requirements import Requirement

norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
present = {norm(n) for n in os.environ["PRESENT"].split()} | {norm(n) for n in os.environ["SKIP"].split()}
present -= {norm(n) for n in os.environ["CARRY_ANYWAY"].split()}
env = {"python_version": os.environ["PYVER"], "python_full_version": os.environ["PYVER"] + ".0",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}
todo, seen, out = ["dfkd"], set(), []
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    dist = metadata.distribution(name)  # fails loudly if .venv lacks a dependency
    if name != "dfkd":
        out.append(f"{dist.metadata['Name']}=={dist.version}")
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            if norm(req.name) not in present and norm(req.name) not in seen:
                todo.append(norm(req.name))
print("\n".join(sorted(out, key=str.lower)))
EOF
)
echo "wheels for Python $PYVER (not on the GPU machine):"; echo "$wanted" | sed 's/^/  /'

# 2. download them (one version each: a stale folder is emptied first); a package published only
#    as an sdist (connection_pool) is built here, and must give a pure-Python py3-none-any wheel
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }  # this machine's pip config names absent folders
for req in $wanted; do
  if ! quiet python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$req" 2>/dev/null; then
    quiet python3 -m pip wheel -q --no-deps -w "$DEST" "$req"
    name=$(echo "${req%%==*}" | tr '-' '_')
    ls "$DEST" | grep -iq "^${name}-.*-py3-none-any.whl$" \
      || { echo "prepare_device_wheels: $req has no wheel for Python $PYVER and is not pure Python" >&2; exit 1; }
    echo "  (built $req from its sdist: pure Python)"
  fi
done

# 3. the data (device_check.sh passes --data .whl/fashion-mnist when it is there)
mkdir -p "$DEST/fashion-mnist"
cp -u "$DATA"/*-ubyte.gz "$DEST/fashion-mnist/"

# 4. sizes against the carry budget
mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
wheels=$(mib "$DEST"/*.whl); total=$(mib "$DEST")
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $wheels MiB; with the data $total MiB"
awk -v w="$wheels" -v t="$total" -v mw=$MAX_WHEELS_MIB -v mt=$MAX_TOTAL_MIB 'BEGIN {
  if (w > mw || t > mt) { printf "prepare_device_wheels: over budget (wheels <= %d MiB, all <= %d MiB)\n", mw, mt; exit 1 } }'
