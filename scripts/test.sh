#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the test suite. Usage: bash scripts/test.sh [pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -m "not gpu" "$@"
rc=$?
if [ "$rc" = 5 ]; then
  # pytest's "no tests collected": for this project that means the suite went missing, not a pass.
  echo "error: pytest collected no tests (exit 5); the suite in tests/ must not be empty" >&2
  exit 1
fi
exit "$rc"
