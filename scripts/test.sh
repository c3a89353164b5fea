#!/usr/bin/env bash
# The test command: lint, the workspace tests (real EMT server processes, real Ray), and
# each service's own tests inside that service's own environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh emt
echo "== ruff"
uv run ruff check .
uv run ruff format --check .
echo "== services/emt (own environment)"
services/emt/.venv/bin/python -m pytest -q -p no:cacheprovider services/emt/tests
echo "== workspace tests"
uv run pytest -q "$@"
