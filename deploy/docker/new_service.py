"""Copies the EMT template into a new potential service: the one command of a drop-in.

Writes ``services/NAME`` (adapter, entrypoint, tests, pyproject.toml, uv.lock and its
``service.toml``) with every name changed: package ``umlip_NAME``, distribution
``umlip-NAME``, model name ``NAME``; the description takes the next free port and joins
the default set. Nothing outside the new folder is written: the local launcher reads the
folder at run time, the image is ``services/Dockerfile --build-arg SERVICE=NAME``, and
``uv run python deploy/render.py`` derives the compose and Kubernetes files from it. The
copy serves EMT under the new name until its two methods are replaced.

With ``--dest ROOT`` the service is written into a copy of the repository's files under
ROOT (what git tracks, without virtual environments): a self-contained tree to build
images from and render, as the container end-to-end test uses.

Usage: python deploy/docker/new_service.py NAME [--dest ROOT]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "emt"
_IGNORE = shutil.ignore_patterns(".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")


def renamed(text: str, name: str) -> str:
    """The template's text with its service name replaced by ``name``."""
    text = re.sub(rf"umlip([_-]){TEMPLATE}\b", rf"umlip\g<1>{name}", text)
    text = re.sub(rf"services/{TEMPLATE}\b", f"services/{name}", text)
    text = re.sub(rf"umlip/{TEMPLATE}\b", f"umlip/{name}", text)
    return re.sub(rf'(\bname = )"{TEMPLATE}"', rf'\g<1>"{name}"', text)


def copy_repository(dest: Path) -> None:
    """The repository's files (tracked and untracked, not ignored) copied under ``dest``."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for entry in filter(None, listed):
        source = REPO_ROOT / entry.decode()
        if source.is_file():
            target = dest / entry.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def description(name: str, services: Path) -> str:
    """The new service's ``service.toml``: the template's, renamed, on the next free port."""
    ports = [tomllib.loads(p.read_text())["port"] for p in services.glob("*/service.toml")]
    text = renamed((REPO_ROOT / "services" / TEMPLATE / "service.toml").read_text(), name)
    text = re.sub(r"(?m)^port = \d+$", f"port = {max(ports) + 1}", text)
    text = re.sub(r"(?m)^default = false$", "default = true", text)
    return re.sub(
        r'(?m)^description = ".*"$',
        f'description = "{name} (made from the EMT template: serves EMT until its adapter '
        'is written)"',
        text,
    )


def new_service(name: str, dest: Path = REPO_ROOT) -> Path:
    """Writes ``dest/services/name`` from the template; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", name) or name == TEMPLATE:
        raise SystemExit(f"service name must be lowercase letters and digits, got {name!r}")
    target = dest / "services" / name
    if target.exists():
        raise SystemExit(f"{target} exists")
    if dest.resolve() != REPO_ROOT:
        copy_repository(dest)
    shutil.copytree(REPO_ROOT / "services" / TEMPLATE, target, ignore=_IGNORE)
    package = target / "src" / f"umlip_{TEMPLATE}"
    package.rename(target / "src" / f"umlip_{name}")
    for path in sorted(target.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".toml", ".lock"}:
            path.write_text(renamed(path.read_text(), name))
    (target / "service.toml").write_text(description(name, dest / "services"))
    return target


def main(argv: list[str] | None = None) -> int:
    """Creates the service; prints the next steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="service name: lowercase letters and digits")
    parser.add_argument("--dest", type=Path, default=REPO_ROOT, help="root to write under")
    args = parser.parse_args(argv)
    target = new_service(args.name, args.dest)
    print(
        f"created {target}; next: implement load() and calculate() in "
        f"src/umlip_{args.name}/potential.py, pin its dependencies and run "
        f"`uv lock --project {target}`, edit its service.toml (gpu, model_package, "
        "checkpoint), then `uv run python deploy/render.py` for compose and Kubernetes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
