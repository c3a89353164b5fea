#!/usr/bin/env bash
# The main job: sets up the environments, starts the default potential services locally
# (each in its own environment, on loopback), and runs the elastic benchmark on the
# bundled 20-material sample. Extra arguments go to `umlip run` (see `umlip run --help`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
exec uv run --frozen umlip run "$@"
