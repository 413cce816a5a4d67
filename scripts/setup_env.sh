#!/usr/bin/env bash
# Create (or reuse) ./.venv with atlas installed, for the README's two commands.
# - Python >= 3.11 (override with PYTHON=/path/to/python).
# - torch: the CPU build on a machine without an NVIDIA GPU (never the multi-GB CUDA wheels);
#   the default CUDA build when `nvidia-smi -L` lists a GPU. Override with ATLAS_TORCH=cpu|cuda.
# - GPU extras (cupy, rapids-singlecell) only with ATLAS_EXTRAS=test,gpu.
# - Object storage: the test extra brings s3fs and moto[server] (tests/cloud runs a local S3 server);
#   gs:// inputs need gcsfs too: ATLAS_EXTRAS=test,cloud.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0
EXTRAS=${ATLAS_EXTRAS:-test}
VENV=${ATLAS_VENV:-.venv}

pick_python() {
  for py in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  echo "error: atlas needs Python >= 3.11; install it or set PYTHON=/path/to/python3.11" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(pick_python)
  echo "[setup] creating $VENV with $($PY --version)" >&2
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# Some machines' pip configs list local indexes that do not exist: hide that noise, keep real errors.
exec 2> >(grep -v "WARNING: Location 'file:" >&2)

stamp="$VENV/.atlas-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) extras=$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  mode=${ATLAS_TORCH:-auto}
  if [ "$mode" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=cuda; else mode=cpu; fi
  fi
  echo "[setup] installing torch $TORCH_VERSION ($mode build)" >&2
  if [ "$mode" = cuda ]; then
    "${PIP[@]}" install "torch==$TORCH_VERSION"
  else
    # A local CPU wheel (pip's find-links) if there is one, else PyTorch's CPU index: never CUDA wheels.
    "${PIP[@]}" install "torch==$TORCH_VERSION+cpu" 2>/dev/null ||
      "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

echo "[setup] installing atlas[$EXTRAS] into $VENV" >&2
"${PIP[@]}" install -e ".[$EXTRAS]"
echo "$want" > "$stamp"
