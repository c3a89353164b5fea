#!/usr/bin/env bash
# Regenerates the Python code of the contract from proto/ into proto/src/.
# Usage: scripts/gen-proto.sh [OUT_DIR]   (default proto/src; tests pass a temp dir to check drift)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/proto/src}"
python="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out"
cd "$root/proto"
"$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  umlip/potential/v1/potential_service.proto
