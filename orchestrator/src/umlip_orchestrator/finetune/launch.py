"""``umlip finetune run``: start a model's own fine-tuning code in its own environment.

The orchestrator never imports torch or a model package: it runs
``python -m umlip_<model>.finetune ...`` with the interpreter of the model's local
environment (created from its lock file like the service's), streams its per-epoch
progress to the terminal and returns its exit status. In containers the same module is
the entry point of a one-off compose service or a Kubernetes Job with the model's image
(``deploy/compose/finetune.yml``, ``deploy/k8s/finetune/``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from umlip_orchestrator.launcher import (
    LauncherError,
    LocalService,
    ensure_environment,
    read_service_list,
)


def finetune_module(service: LocalService) -> str:
    """The fine-tuning module of a service package.

    Raises:
        LauncherError: the package has none (e.g. the analytic EMT reference).
    """
    module = f"{service.module}.finetune"
    if not (service.project / "src" / service.module / "finetune.py").is_file():
        raise LauncherError(f"model {service.name} has no fine-tuning entry point ({module})")
    return module


def run_finetune(model: str, arguments: Sequence[str]) -> int:
    """Runs ``model``'s fine-tuning with ``arguments`` (see ``umlip finetune run -h``).

    Returns:
        The process's exit status (2: bad input, with a one-line message).

    Raises:
        LauncherError: unknown model, no entry point, or its environment cannot be made.
    """
    services = read_service_list()
    if model not in services:
        raise LauncherError(f"unknown model {model!r}; known: {sorted(services)}")
    service = services[model]
    module = finetune_module(service)
    python = ensure_environment(service)
    command = [str(python), "-m", module, *arguments]
    return subprocess.run(command, check=False).returncode


def absolute(path: Path) -> str:
    """A path as an absolute string (the module runs with its own working directory)."""
    return str(Path(path).resolve())
