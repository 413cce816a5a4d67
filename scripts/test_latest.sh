#!/usr/bin/env bash
# Run the default test suite (-m "not slow") against the newest scverse stack on Python 3.12, in ./.venv312
# (the README's ./.venv stays the tested Python 3.11 stack). Extra arguments go to pytest.
# - Python 3.12: $PYTHON312, else python3.12 on PATH, else a pyenv 3.12; without one it says so and exits 2.
# - torch 2.13.0, CPU build only (a local +cpu wheel from pip's find-links, else PyTorch's CPU index). When
#   neither has a wheel for Python 3.12 it stops and says so; ATLAS_TORCH=cuda takes PyPI's default build
#   instead (the CUDA one: several GB of nvidia-* wheels, but it runs on CPU too).
# - The stack: SCVI_TOOLS, ANNDATA, SCANPY, SCIB_METRICS select versions (defaults below: the newest, tested);
#   pandas, zarr, jax and the rest resolve to the newest within pyproject.toml's bounds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TORCH_VERSION=2.13.0
VENV=${ATLAS_VENV:-.venv312}
want=("scvi-tools==${SCVI_TOOLS:-1.5.1}" "anndata==${ANNDATA:-0.13.4}" "scanpy==${SCANPY:-1.12.4}"
      "scib-metrics==${SCIB_METRICS:-0.6.1}")

die() { echo "test_latest: cannot test the newest stack: $*" >&2; exit 2; }

pick_python312() {
  local py
  for py in "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(pick_python312) || die "no Python 3.12 found (looked at \$PYTHON312, python3.12, ~/.pyenv/versions/3.12*);
install one or set PYTHON312=/path/to/python3.12"
  echo "[latest] creating $VENV with $($PY --version)" >&2
  "$PY" -m venv "$VENV" || die "'$PY -m venv $VENV' failed"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# Some machines' pip configs list local indexes that do not exist: hide that noise, keep real errors.
exec 2> >(grep -v "WARNING: Location 'file:" >&2)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[latest] installing torch $TORCH_VERSION (CPU build)" >&2
  if ! "${PIP[@]}" install "torch==$TORCH_VERSION+cpu" 2>/dev/null &&
     ! "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null; then
    [ "${ATLAS_TORCH:-cpu}" = cuda ] || die "no CPU build of torch $TORCH_VERSION for Python 3.12 (none in pip's
find-links, PyTorch's CPU index unreachable); put torch-$TORCH_VERSION+cpu-cp312-*.whl in a find-links folder,
or set ATLAS_TORCH=cuda to take PyPI's default (CUDA) build, several GB"
    echo "[latest] no CPU build for Python 3.12: installing PyPI's torch $TORCH_VERSION (CUDA build, ATLAS_TORCH=cuda)" >&2
    "${PIP[@]}" install "torch==$TORCH_VERSION" || die "pip could not install torch==$TORCH_VERSION"
  fi
fi

echo "[latest] installing atlas[test] with ${want[*]}" >&2
"${PIP[@]}" install -e ".[test]" "${want[@]}" || die "pip could not install atlas[test] with ${want[*]}
(a pin in pyproject.toml may exclude them: see the README's 'Versions' paragraph)"

echo "[latest] installed:" >&2
"$VENV/bin/python" - <<'EOF' >&2
import sys
from importlib.metadata import version
names = ["scvi-tools", "anndata", "scanpy", "scib-metrics", "pandas", "numpy", "zarr", "torch", "lightning",
         "jax", "decoupler", "pyucell"]
print(f"  python {sys.version.split()[0]}; " + "; ".join(f"{n} {version(n)}" for n in names))
EOF
exec "$VENV/bin/python" -m pytest -q -m "not slow" "$@"
