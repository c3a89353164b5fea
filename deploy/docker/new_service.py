"""Copies the EMT template into a new potential service: step 1 of "Drop in a potential".

Writes ``services/NAME`` (adapter, entrypoint, tests, pyproject.toml, uv.lock, Dockerfile)
with every name changed: package ``umlip_NAME``, distribution ``umlip-NAME``, model name
``NAME``, the Dockerfile's SERVICE and entrypoint. The copy serves EMT under the new name
until its two methods are replaced (docs/deploy.md has the rest of the checklist).

With ``--dest ROOT`` the service is written under another root, together with what its
image build needs (proto/, services/common/, deploy/docker/): a self-contained build
context, as the container end-to-end test uses.

Usage: python deploy/docker/new_service.py NAME [--dest ROOT]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "emt"
#: What an image build of a service reads besides the service itself.
BUILD_CONTEXT = ("proto/pyproject.toml", "proto/src", "services/common", "deploy/docker")
_IGNORE = shutil.ignore_patterns(".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")


def renamed(text: str, name: str) -> str:
    """The template's text with its service name replaced by ``name``."""
    text = re.sub(rf"umlip([_-]){TEMPLATE}\b", rf"umlip\g<1>{name}", text)
    text = re.sub(rf"services/{TEMPLATE}\b", f"services/{name}", text)
    text = re.sub(rf"umlip/{TEMPLATE}\b", f"umlip/{name}", text)
    text = re.sub(rf"ARG SERVICE={TEMPLATE}\b", f"ARG SERVICE={name}", text)
    return re.sub(rf'(\bname = )"{TEMPLATE}"', rf'\g<1>"{name}"', text)


def new_service(name: str, dest: Path = REPO_ROOT) -> Path:
    """Writes ``dest/services/name`` from the template; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", name) or name == TEMPLATE:
        raise SystemExit(f"service name must be lowercase letters and digits, got {name!r}")
    target = dest / "services" / name
    if target.exists():
        raise SystemExit(f"{target} exists")
    if dest.resolve() != REPO_ROOT:
        for relative in BUILD_CONTEXT:
            source, copy = REPO_ROOT / relative, dest / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, copy, ignore=_IGNORE, dirs_exist_ok=True)
            else:
                shutil.copy2(source, copy)
    shutil.copytree(REPO_ROOT / "services" / TEMPLATE, target, ignore=_IGNORE)
    package = target / "src" / f"umlip_{TEMPLATE}"
    package.rename(target / "src" / f"umlip_{name}")
    for path in sorted(target.rglob("*")):
        text_file = path.suffix in {".py", ".toml", ".lock"} or path.name == "Dockerfile"
        if path.is_file() and text_file:
            path.write_text(renamed(path.read_text(), name))
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
        f"`uv lock --project {target}`, then docs/deploy.md's checklist"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
