#!/usr/bin/env bash
# The README's second command (and what CI runs): set up ./.venv and run the test suite.
# GPU tests skip themselves without a GPU; tests marked slow are left out unless ATLAS_SLOW=1.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
marker="not slow"
[ "${ATLAS_SLOW:-0}" = 1 ] && marker=""
exec .venv/bin/python -m pytest -q -m "$marker" "$@"
