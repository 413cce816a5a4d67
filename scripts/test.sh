#!/usr/bin/env bash
# The README's second command (and what CI runs): set up ./.venv and run the test suite.
# GPU tests skip themselves without a GPU; tests marked slow are left out unless ATLAS_SLOW=1.
# Extra arguments go to pytest; ATLAS_TEST_WORKERS=0 runs the suite in one process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
marker="not slow"
[ "${ATLAS_SLOW:-0}" = 1 ] && marker=""
# Two worker processes (ATLAS_TEST_WORKERS; 0 runs in this process), each test file in one worker so its
# module fixtures are built once: about a third less wall time than one process on CI's two cores.
workers=${ATLAS_TEST_WORKERS:-2}
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadfile)
exec .venv/bin/python -m pytest -q -m "$marker" "${parallel[@]}" "$@"
