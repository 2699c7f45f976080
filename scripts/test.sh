#!/usr/bin/env bash
# The test suite, from a fresh clone: sets up .venv, runs ruff (lint + format check) and mypy, then pytest. Extra arguments go to pytest.
# Real-data tests use ../shared (or $VGGTRANSFER_SHARED); VGGTRANSFER_REQUIRE_DATA=1 turns their skips into failures.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
# Static checks first (seconds): lint, formatting, types. Each failure names the files and lines.
ruff check --quiet vggtransfer tests bench examples scripts || { echo "error: ruff found the problems above" >&2; exit 1; }
ruff format --check --quiet vggtransfer tests bench examples scripts \
  || { echo "error: files above are not formatted; run: ruff format vggtransfer tests bench examples scripts" >&2; exit 1; }
mypy --no-error-summary || { echo "error: mypy found the type errors above" >&2; exit 1; }
exec python -m pytest tests -q -p no:cacheprovider "$@"
