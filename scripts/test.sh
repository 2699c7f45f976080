#!/usr/bin/env bash
# The test suite, from a fresh clone: sets up .venv, lints with ruff, then runs pytest. Extra arguments go to pytest.
# Real-data tests use ../shared (or $VGGTRANSFER_SHARED); VGGTRANSFER_REQUIRE_DATA=1 turns their skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ruff check --quiet vggtransfer tests bench examples || { echo "error: ruff found the problems above" >&2; exit 1; }
exec python -m pytest tests -q -p no:cacheprovider "$@"
