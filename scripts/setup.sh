#!/usr/bin/env bash
# Creates (or reuses) the environments: the dev/orchestrator workspace in .venv and one
# environment per potential service under services/<name>/.venv, each from its lock file.
# Usage: scripts/setup.sh [SERVICE ...]   (default: emt)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! command -v uv >/dev/null 2>&1; then
  echo "umlip setup: installing uv with pip" >&2
  python3 -m pip install --quiet "uv==0.13.9"
fi
uv sync --frozen --quiet
for service in "${@:-emt}"; do
  uv sync --frozen --quiet --extra test --project "services/$service"
done
