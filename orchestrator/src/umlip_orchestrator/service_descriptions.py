"""The one description of each potential service: ``services/<name>/service.toml``.

A folder under ``services/`` with a ``service.toml`` is a service. The local launcher
reads the descriptions at run time (from the folder :func:`find_services_dir` names);
``deploy/render.py`` derives the compose services (and their GPU and CPU variants), the
Kubernetes manifests and the endpoint lists from them. Keys (all required):

- ``name``: the model name, equal to the folder name (lower case, digits, ``-``).
- ``module``: the package run with ``python -m``; ``umlip_<name>`` (``-`` as ``_``).
- ``port``: its loopback port in the compose stack (unique, 1024-65535).
- ``gpu``: a torch model: CUDA base image and a GPU reservation in production.
- ``default``: part of the default model set (``umlip run`` without ``--models``, the
  compose stack's benchmark).
- ``model_package``: ``name==version`` of the model package, for image labels (a test
  keeps it equal to the service's lock).
- ``checkpoint``: the checkpoint served by default, for documentation and labels.
- ``cache``: a folder under the user's home the model caches downloads in (kept in a
  volume), or ``""``.
- ``description``: one line.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

#: Names the folder of service folders, overriding the search from the working directory.
SERVICES_DIR_VARIABLE = "UMLIP_SERVICES_DIR"
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_KEYS = {
    "name": str,
    "module": str,
    "port": int,
    "gpu": bool,
    "default": bool,
    "model_package": str,
    "checkpoint": str,
    "cache": str,
    "description": str,
}


class ServiceDescriptionError(ValueError):
    """A ``service.toml`` is missing, unreadable or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class ServiceDescription:
    """One ``services/<name>/service.toml`` (see the module docstring for the keys)."""

    name: str
    module: str
    port: int
    gpu: bool
    default: bool
    model_package: str
    checkpoint: str
    cache: str
    description: str
    folder: Path

    @property
    def finetunes(self) -> bool:
        """Whether the adapter package has a fine-tuning module (``umlip_<name>.finetune``):
        ``umlip finetune run``, the compose one-off and the Kubernetes Job then exist."""
        return (self.folder / "src" / self.module / "finetune.py").is_file()

    @property
    def env_name(self) -> str:
        """The name in environment variables, e.g. ``MY_MODEL`` for ``my-model``."""
        return self.name.upper().replace("-", "_")


def read_description(path: Path) -> ServiceDescription:
    """Parses and checks one ``service.toml``.

    Raises:
        ServiceDescriptionError: unreadable, a key missing, unknown or of the wrong type,
            a name that is not the folder's, or a module that is not ``umlip_<name>``.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ServiceDescriptionError(f"cannot read {path}: {error}") from None
    if missing := sorted(_KEYS.keys() - data.keys()):
        raise ServiceDescriptionError(f"{path}: missing {', '.join(missing)}")
    if unknown := sorted(data.keys() - _KEYS.keys()):
        raise ServiceDescriptionError(f"{path}: unknown key(s) {', '.join(unknown)}")
    for key, kind in _KEYS.items():
        if type(data[key]) is not kind:
            raise ServiceDescriptionError(f"{path}: {key} must be a {kind.__name__}")
    name = data["name"]
    if not _NAME.match(name) or name != path.parent.name:
        raise ServiceDescriptionError(
            f"{path}: name {name!r} must be the folder's name ({path.parent.name!r}), "
            "lower case letters, digits and '-'"
        )
    if data["module"] != f"umlip_{name.replace('-', '_')}":
        raise ServiceDescriptionError(f"{path}: module must be umlip_{name.replace('-', '_')}")
    if not 1024 <= data["port"] <= 65535:
        raise ServiceDescriptionError(f"{path}: port must be in 1024..65535")
    return ServiceDescription(**data, folder=path.parent.resolve())


def find_services_dir(start: Path | None = None) -> Path:
    """The folder of service folders the local launcher starts services from.

    ``$UMLIP_SERVICES_DIR`` when set; otherwise the nearest ``services/`` holding a
    ``*/service.toml`` in ``start`` (the working directory) or a folder above it, as git
    finds its repository. Nothing depends on where the orchestrator is installed: a
    wheel installed anywhere finds the services of the checkout it is run in.

    Raises:
        ServiceDescriptionError: the variable names no folder, or none is found.
    """
    if named := os.environ.get(SERVICES_DIR_VARIABLE):
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise ServiceDescriptionError(f"{SERVICES_DIR_VARIABLE}={named} is not a folder")
        return folder.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "services"
        if any(candidate.glob("*/service.toml")):
            return candidate
    raise ServiceDescriptionError(
        f"no services/ folder with service descriptions in {here} or above it: run from a "
        f"umlip checkout, set {SERVICES_DIR_VARIABLE}, or name running services with "
        "--service NAME=HOST:PORT or --endpoints FILE"
    )


def read_descriptions(services_dir: Path | None = None) -> dict[str, ServiceDescription]:
    """Every service under ``services_dir`` (default :func:`find_services_dir`), by name.

    Raises:
        ServiceDescriptionError: none found, a description is invalid, or two share a port.
    """
    if services_dir is None:
        services_dir = find_services_dir()
    found = {}
    for path in sorted(Path(services_dir).glob("*/service.toml")):
        description = read_description(path)
        found[description.name] = description
    ports: dict[int, str] = {}
    for description in found.values():
        if description.port in ports:
            raise ServiceDescriptionError(
                f"services {ports[description.port]} and {description.name} share port "
                f"{description.port}"
            )
        ports[description.port] = description.name
    return found
