#!/usr/bin/env bash
# Container end-to-end test: real images, real containers, a real benchmark.
#
# Builds the EMT, CHGNet and orchestrator images (services/Dockerfile with SERVICE=<name>,
# on a local Debian base made with debootstrap, torch from the local CPU wheel), plus
# "emt2": a new service made from the EMT template by deploy/docker/new_service.py, the
# one command of a drop-in, in a copy of the repository; deploy/render.py then derives its
# compose service and Kubernetes manifests (checked with kubectl kustomize), and the stack
# runs emt2 as the rendered compose file describes it (no orchestrator change). Starts the
# stack with docker-compose (deploy/compose/e2e.yml, host network, loopback ports,
# health-gated), runs `umlip run --limit 3 --ion-mode clamped` in the orchestrator
# container, checks the Parquet tables, fine-tunes CHGNet in its own image (the compose
# one-off of deploy/compose/finetune.yml), and tears everything down. Prints the time of
# each stage and the image sizes.
#
# Needs root (apt-get, dockerd, debootstrap). Installs docker.io, docker-compose and
# debootstrap if missing; starts dockerd (--bridge=none --iptables=false) if none runs,
# and stops it again at the end. Images and BuildKit caches stay in dockerd's data root,
# so a second run builds from cache. Containers talk over loopback only; image builds use
# the host network to reach the package mirrors.
#
# Usage: scripts/container-e2e.sh              the whole test
#        scripts/container-e2e.sh --tools-only only install the tools (docker.io,
#                                              docker-compose, debootstrap) if missing,
#                                              e.g. before pytest renders the compose files
#
# Environment: UMLIP_E2E_KEEP=1 keeps the work folder (logs, tables; kept anyway when
# the test fails); UMLIP_E2E_DIR (the work folder, default a new temp folder); UMLIP_TORCH_WHEELS (folder with the CPU torch wheel, default /opt/wheels;
# without one, torch comes from the PyTorch CPU index), UMLIP_WHEELS_PORT (the loopback
# port that serves it, default 38765); UMLIP_DEBIAN_MIRROR.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

install_tools() {  # LOG: apt-get install what is missing
  if ! command -v dockerd >/dev/null || [[ ! -x /usr/bin/docker ]] ||
    ! command -v docker-compose >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -q >"$1" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io docker-compose debootstrap \
      >>"$1" 2>&1 || { tail -20 "$1"; return 1; }
  fi
}
if [[ "${1:-}" == "--tools-only" ]]; then
  apt_log="$(mktemp /tmp/umlip-apt.XXXXXX.log)"
  install_tools "$apt_log"
  rm -f "$apt_log"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--tools-only]" >&2
  exit 2
fi

base_image="umlip/debian-base:bookworm"
tag="e2e"
project="umlip-e2e"
limit=3
mirror="${UMLIP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
wheels="${UMLIP_TORCH_WHEELS:-/opt/wheels}"
keep="${UMLIP_E2E_KEEP:-0}"
work="${UMLIP_E2E_DIR:-$(mktemp -d /tmp/umlip-container-e2e.XXXXXX)}"
mkdir -p "$work"
export DOCKER_BUILDKIT=1

started_dockerd=""
wheel_server=""
compose_started=""
compose_v2_started=""
timings=()
e2e_start=$SECONDS
stage_start=$SECONDS

log() { printf '\n== %s\n' "$*"; }
stage_done() {  # NAME: records the time since the previous stage ended
  timings+=("$(printf '%-34s %5d s' "$1" $((SECONDS - stage_start)))")
  stage_start=$SECONDS
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Debian's docker CLI (20.10) drives BuildKit itself; a newer CLI elsewhere on PATH may
# need the buildx plugin.
docker_cli() { /usr/bin/docker "$@"; }

compose() {
  docker-compose -p "$project" -f deploy/compose/e2e.yml -f "$work/emt2.yml" "$@"
}
compose_v2_bin=""
compose_v2() {  # the same stack under Docker Compose v2, as project $project-v2
  "$compose_v2_bin" -p "$project-v2" -f deploy/compose/e2e.yml -f "$work/emt2.yml" "$@"
}

exec 3>&1 4>&2  # the script's own output, for the teardown (a trap may run mid-redirect)
teardown() {
  local status=$?
  set +e
  exec 1>&3 2>&4
  if [[ -n "$compose_started" ]]; then
    log "teardown: compose down"
    compose down --volumes --remove-orphans >>"$work/compose-down.log" 2>&1
  fi
  if [[ -n "$compose_v2_started" ]]; then
    log "teardown: compose v2 down"
    compose_v2 down --volumes --remove-orphans >>"$work/compose-down.log" 2>&1
  fi
  if [[ -n "$wheel_server" ]]; then
    kill "$wheel_server" 2>/dev/null
    wait "$wheel_server" 2>/dev/null
  fi
  if [[ -n "$started_dockerd" ]]; then
    log "teardown: stopping the dockerd this script started (pid $started_dockerd)"
    kill "$started_dockerd" 2>/dev/null
    for _ in $(seq 60); do
      kill -0 "$started_dockerd" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$started_dockerd" 2>/dev/null && kill -KILL "$started_dockerd"
  fi
  if [[ "$keep" == 1 || $status -ne 0 ]]; then
    echo "work folder kept: $work"
  else
    rm -rf "$work"
  fi
  echo
  echo "== timings"
  printf '%s\n' "${timings[@]}"
  printf '%-34s %5d s\n' "total" $((SECONDS - e2e_start))
  if [[ $status -eq 0 ]]; then
    echo "container e2e: PASSED"
  else
    echo "container e2e: FAILED (exit $status)"
  fi
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Tools -----------------------------------------------------------------------
log "tools"
install_tools "$work/apt.log"
docker_cli --version
docker-compose --version
compose_v2_bin="$(scripts/install-compose-v2.sh)"
"$compose_v2_bin" version
stage_done "install tools"

# --- 2. Docker daemon ---------------------------------------------------------------
log "docker daemon"
if ! docker_cli info >/dev/null 2>&1; then
  # No bridge and no iptables: containers use the host network (loopback) only.
  dockerd --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do
    docker_cli info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || { tail -20 "$work/dockerd.log"; exit 1; }
    sleep 1
  done
  docker_cli info >/dev/null || { tail -20 "$work/dockerd.log"; exit 1; }
  echo "started dockerd (pid $started_dockerd, log $work/dockerd.log)"
else
  echo "using the running dockerd"
fi
stage_done "start dockerd"

# --- 3. Base image (cached) ---------------------------------------------------------
log "base image $base_image"
if docker_cli image inspect "$base_image" >/dev/null 2>&1; then
  echo "cached"
else
  rootfs="$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/locale/*
  # This machine's CA bundle, so that pip and uv inside builds trust its package mirrors.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rootfs" -c . | docker_cli import \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$base_image"
  rm -rf "$rootfs"
fi
stage_done "base image (debootstrap)"

# --- 4. Torch for the builds: the local CPU wheel, served on loopback ---------------
torch_args=(--build-arg TORCH_VARIANT=+cpu)
if compgen -G "$wheels/torch-*+cpu-*.whl" >/dev/null; then
  # A fixed port keeps the build argument, and so the cached torch layer, the same from
  # run to run; another one only if it is taken.
  port="${UMLIP_WHEELS_PORT:-38765}"
  port_free() {
    python3 -c "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', $1))" 2>/dev/null
  }
  port_free "$port" || port="$(free_port)"
  python3 -m http.server --bind 127.0.0.1 "$port" -d "$wheels" >"$work/wheels.log" 2>&1 &
  wheel_server=$!
  for _ in $(seq 50); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/', timeout=1)" \
      2>/dev/null && break
    sleep 0.2
  done
  torch_args+=(--build-arg "TORCH_FIND_LINKS=http://127.0.0.1:$port/")
  echo "torch wheels from $wheels on http://127.0.0.1:$port/"
else
  torch_args+=(--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)
  echo "no CPU torch wheel in $wheels: torch from the PyTorch CPU index"
fi

# --- 5. The drop-in service: emt2, from the template --------------------------------
log "emt2: a new service from the EMT template"
context2="$work/emt2-context"
python3 deploy/docker/new_service.py emt2 --dest "$context2"
if command -v uv >/dev/null; then
  # Lock it (offline when uv's cache has everything).
  uv lock --quiet --project "$context2/services/emt2" --offline 2>/dev/null ||
    uv lock --quiet --project "$context2/services/emt2"
fi
# Everything else follows from its service.toml: the compose files and Kubernetes.
uv run --frozen python deploy/render.py --root "$context2"
grep -q 'SERVICE: emt2' "$context2/deploy/compose/docker-compose.yml"
grep -q '"emt2": "127.0.0.1:' "$context2/deploy/compose/endpoints.json"
if command -v kubectl >/dev/null; then
  kubectl kustomize "$context2/deploy/k8s" >"$work/emt2-k8s.yaml"
  grep -q 'dns:///emt2.umlip.svc.cluster.local:50051' "$work/emt2-k8s.yaml"
  grep -q 'image: umlip/emt2:0.1.0' "$work/emt2-k8s.yaml"
  echo "emt2 in the rendered Kubernetes manifests ($work/emt2-k8s.yaml)"
fi
stage_done "emt2 from the template, rendered"

# --- 6. Images ------------------------------------------------------------------------
build() {  # NAME CONTEXT DOCKERFILE [ARGS...]
  local name="$1" context="$2" dockerfile="$3"
  shift 3
  log "build umlip/$name:$tag"
  local start=$SECONDS
  if ! docker_cli build --network host --progress plain \
    --build-arg "BASE_IMAGE=$base_image" --build-arg "TOOLS_IMAGE=$base_image" "$@" \
    -f "$context/$dockerfile" -t "umlip/$name:$tag" "$context" >"$work/build-$name.log" 2>&1; then
    tail -40 "$work/build-$name.log"
    exit 1
  fi
  echo "built in $((SECONDS - start)) s"
  stage_done "build $name"
}
# A service's build arguments, from its service.toml (as deploy/render.py writes them
# into the compose files).
service_args() {  # ROOT NAME
  python3 - "$1/services/$2/service.toml" <<'PY'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
for key, value in (("SERVICE", d["name"]), ("MODEL_PACKAGE", d["model_package"]),
                   ("CHECKPOINT", d["checkpoint"])):
    print(f"--build-arg={key}={value}")
PY
}
mapfile -t emt_args < <(service_args "$root" emt)
mapfile -t chgnet_args < <(service_args "$root" chgnet)
mapfile -t emt2_args < <(service_args "$context2" emt2)
build emt "$root" services/Dockerfile "${emt_args[@]}"
build chgnet "$root" services/Dockerfile "${chgnet_args[@]}" "${torch_args[@]}"
build orchestrator "$root" orchestrator/Dockerfile
build emt2 "$context2" services/Dockerfile "${emt2_args[@]}"
# The labels carry the model package and checkpoint of each description.
for name in emt chgnet emt2; do
  label="$(docker_cli image inspect --format '{{ index .Config.Labels "io.umlip.model.package" }}' \
    "umlip/$name:$tag")"
  [[ -n "$label" ]] || { echo "umlip/$name has no io.umlip.model.package label"; exit 1; }
  echo "umlip/$name: $label"
done
# Earlier builds of these images that lost their tag (only this project's images).
docker_cli image prune --force --filter label=io.umlip.contract >/dev/null
echo
docker_cli images --filter 'reference=umlip/*'

# --- 7. The stack ---------------------------------------------------------------------
log "compose up: emt, chgnet, emt2 and the benchmark"
emt_port="$(free_port)"
chgnet_port="$(free_port)"
emt2_port="$(free_port)"
# emt2 as the rendered compose file of the drop-in tree describes it (on a free port).
cat >"$work/emt2.yml" <<EOF
version: "2.4"
services:
  emt2:
    extends: {file: $context2/deploy/compose/docker-compose.yml, service: emt2}
    environment:
      UMLIP_PORT: "$emt2_port"
  benchmark:
    depends_on:
      emt2: {condition: service_healthy}
EOF
cat >"$work/endpoints.json" <<EOF
{"services": {"emt": "127.0.0.1:$emt_port", "chgnet": "127.0.0.1:$chgnet_port",
              "emt2": "127.0.0.1:$emt2_port"}}
EOF
mkdir -p "$work/results"
chown 10001:10001 "$work/results"  # the images' user
export UMLIP_TAG="$tag" COMPOSE_PROFILES=optional \
  UMLIP_EMT_PORT="$emt_port" UMLIP_CHGNET_PORT="$chgnet_port" \
  UMLIP_ENDPOINTS="$work/endpoints.json" UMLIP_RESULTS="$work/results" \
  UMLIP_RUN_ARGS="--limit $limit --ion-mode clamped"
compose config --quiet
compose_started=1
compose down --volumes --remove-orphans >/dev/null 2>&1  # leftovers of an aborted run
if ! timeout 1200 docker-compose -p "$project" -f deploy/compose/e2e.yml -f "$work/emt2.yml" \
  up --no-build --no-color --exit-code-from benchmark >"$work/compose-up.log" 2>&1; then
  tail -60 "$work/compose-up.log"
  exit 1
fi
grep -E 'benchmark_1 +\| ' "$work/compose-up.log" | grep -v -E 'WARNING|^\s*$' | tail -12 || true
stage_done "compose up + benchmark"

# --- 8. The tables ----------------------------------------------------------------------
log "check the tables"
docker_cli run --rm --network none --entrypoint /opt/venv/bin/python \
  -v "$work/results:/results:ro" -v "$root/tests/deploy/check_e2e_results.py:/check.py:ro" \
  "umlip/orchestrator:$tag" /check.py /results --models emt,chgnet,emt2 \
  --materials "$limit" --same emt2=emt
stage_done "check tables"

# --- 8b. The same stack under Docker Compose v2 -------------------------------------------
log "compose v2 up: the same files, images and checks"
mkdir -p "$work/results-v2"
chown 10001:10001 "$work/results-v2"
compose_v2 config --quiet
compose_v2_started=1
compose_v2 down --volumes --remove-orphans >/dev/null 2>&1
if ! UMLIP_RESULTS="$work/results-v2" timeout 1200 "$compose_v2_bin" -p "$project-v2" \
  -f deploy/compose/e2e.yml -f "$work/emt2.yml" \
  up --no-build --no-color --exit-code-from benchmark >"$work/compose-v2-up.log" 2>&1; then
  tail -60 "$work/compose-v2-up.log"
  exit 1
fi
grep -E 'benchmark-1 +\| ' "$work/compose-v2-up.log" | grep -v -E 'WARNING|^\s*$' | tail -6 || true
compose_v2 down --volumes --remove-orphans >>"$work/compose-down.log" 2>&1
compose_v2_started=""
docker_cli run --rm --network none --entrypoint /opt/venv/bin/python \
  -v "$work/results-v2:/results:ro" -v "$root/tests/deploy/check_e2e_results.py:/check.py:ro" \
  "umlip/orchestrator:$tag" /check.py /results --models emt,chgnet,emt2 \
  --materials "$limit" --same emt2=emt
stage_done "compose v2 up + benchmark + tables"

# --- 9. Fine-tuning as a compose one-off ------------------------------------------------
log "fine-tune CHGNet in its own image (compose one-off service of finetune.yml)"
mkdir -p "$work/finetune" "$work/checkpoints"
chown 10001:10001 "$work/finetune" "$work/checkpoints"  # the images' user
# Six strained, rattled Cu cells labelled by ASE's EMT (label_source model:emt), written
# as the canonical training file by the orchestrator image.
docker_cli run --rm --network none --entrypoint /opt/venv/bin/python \
  -v "$work/finetune:/finetune" "umlip/orchestrator:$tag" -c '
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from umlip_wire.training_data import Label, labelled_frame, write_training_file
rng = np.random.default_rng(0)
frames = []
for k in range(6):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(atoms.cell.array * (1 + 0.01 * (k - 3)), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    atoms.calc = EMT()
    label = Label(atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False))
    frames.append(labelled_frame(atoms, label, "model:emt"))
write_training_file("/finetune/training.xyz", frames)
'
if ! UMLIP_FINETUNE_DATA="$work/finetune" UMLIP_CHECKPOINTS="$work/checkpoints" \
  timeout 900 docker-compose -p "$project" -f deploy/compose/docker-compose.yml \
  -f deploy/compose/finetune.yml run --rm -T finetune-chgnet --epochs 2 --batch-size 2 \
  >"$work/finetune.log" 2>&1; then
  tail -40 "$work/finetune.log"
  exit 1
fi
grep -E '^(epoch|umlip finetune)' "$work/finetune.log" || true
python3 - "$work/checkpoints/chgnet-ft/provenance.json" <<'EOF'
import json, sys
record = json.load(open(sys.argv[1]))
assert record["model_name"].startswith("chgnet-ft-"), record["model_name"]
assert record["label_source"] == "model:emt" and len(record["epochs"]) == 2, record
print(f"provenance: {record['model_name']} from {record['base_checkpoint']}, labels "
      f"{record['label_source']}, {len(record['epochs'])} epochs")
EOF
stage_done "fine-tune one-off (compose)"
