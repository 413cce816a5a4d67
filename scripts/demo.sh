#!/usr/bin/env bash
# The README's first command: set up ./.venv (CPU torch unless a GPU is present) and run `atlas demo`.
# Extra arguments go to `atlas demo` (e.g. --run-dir my_demo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
exec .venv/bin/atlas demo "$@"
