"""The local launcher: each service in its own virtual environment, on loopback.

Reads the service descriptions (``services/<name>/service.toml``), creates or reuses
each service's environment from its lock file (``uv sync --frozen``; skipped when the
lock has not changed since the last sync), starts each server on a free loopback port,
waits for health SERVING and writes the endpoint list the orchestrator reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from umlip_orchestrator.service_descriptions import ServiceDescriptionError, read_descriptions
from umlip_wire.cpus import available_cpus
from umlip_wire.process import ServiceProcess, ServiceStartError

logger = logging.getLogger("umlip_orchestrator.launcher")


class LauncherError(RuntimeError):
    """A service's environment or process could not be set up."""


@dataclass(frozen=True, kw_only=True)
class LocalService:
    """One entry of the service list."""

    name: str
    project: Path
    module: str
    env: Mapping[str, str] = field(default_factory=dict)
    default: bool = True

    @property
    def python(self) -> Path:
        """The interpreter of the service's own environment."""
        return self.project / ".venv" / "bin" / "python"


def read_service_list(services_dir: Path | None = None) -> dict[str, LocalService]:
    """The services described under ``services_dir`` (``services/<name>/service.toml``,
    read at run time: a new folder is a new service, nothing else to edit); by default
    the folder :func:`~umlip_orchestrator.service_descriptions.find_services_dir` finds.

    Raises:
        LauncherError: no services folder is found, or a description is invalid.
    """
    try:
        descriptions = read_descriptions(services_dir)
    except ServiceDescriptionError as error:
        raise LauncherError(str(error)) from error
    return {
        name: LocalService(name=name, project=d.folder, module=d.module, default=d.default)
        for name, d in descriptions.items()
    }


def with_checkpoints(
    services: Iterable[LocalService], checkpoints: Mapping[str, str]
) -> list[LocalService]:
    """``services`` with ``UMLIP_CHECKPOINT`` set for those named in ``checkpoints``.

    A checkpoint is a model name the service knows, a checkpoint file, or the output
    folder of ``umlip finetune run`` (the service then reports the fine-tuned model's
    own name). Existing paths are made absolute, since services run in their folders.

    Raises:
        LauncherError: a checkpoint names a service that is not started.
    """
    services = list(services)
    unknown = sorted(set(checkpoints) - {s.name for s in services})
    if unknown:
        raise LauncherError(f"--checkpoint for {unknown}, which are not among the models run")
    result = []
    for service in services:
        if service.name in checkpoints:
            value = checkpoints[service.name]
            if Path(value).exists():
                value = str(Path(value).resolve())
            service = replace(service, env={**service.env, "UMLIP_CHECKPOINT": value})
        result.append(service)
    return result


def ensure_environment(service: LocalService) -> Path:
    """Creates or reuses ``service``'s environment; returns its interpreter.

    The environment is reused when the lock file's hash matches the one recorded at the
    last successful sync, so a second launch installs nothing.
    """
    lock = service.project / "uv.lock"
    if not lock.exists():
        raise LauncherError(f"{service.name}: no lock file at {lock}")
    stamp = service.project / ".venv" / ".umlip-lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if service.python.exists() and stamp.exists() and stamp.read_text() == digest:
        return service.python
    uv = shutil.which("uv")
    if uv is None:
        raise LauncherError("uv is not installed (run scripts/setup.sh)")
    logger.info("creating the environment of %s (uv sync)", service.name)
    result = subprocess.run(
        [uv, "sync", "--frozen", "--inexact", "--quiet", "--project", str(service.project)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LauncherError(f"{service.name}: uv sync failed:\n{result.stderr[-2000:]}")
    stamp.write_text(digest)
    return service.python


def write_endpoints(path: Path, endpoints: Mapping[str, str]) -> None:
    """Writes the endpoint list ``{"services": {name: "host:port"}}`` atomically.

    The same ``{"services": {name: text}}`` layout also records pids and reasons.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": dict(endpoints)}, indent=2) + "\n")
    tmp.replace(path)


def read_endpoints(path: Path) -> dict[str, str]:
    """Reads an endpoint list (JSON ``{"services": {name: target}}``)."""
    try:
        data = json.loads(path.read_text())
        services = data["services"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LauncherError(f"cannot read endpoint list {path}: {error}") from error
    if not isinstance(services, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in services.items()
    ):
        raise LauncherError(f"{path}: 'services' must map names to 'host:port' strings")
    return dict(services)


#: How often a fleet checks that its services are alive, s.
CHECK_INTERVAL_S = 1.0


class LocalFleet:
    """Starts services for the duration of a ``with`` block and keeps them running.

    Services whose environment or model cannot be set up are recorded in
    :attr:`unavailable` with the reason, and the others still start. A service that
    dies is restarted on the same port (clients keep their address; their retries
    bridge the gap) by a watchdog thread, unless ``restart`` is False.

    Args:
        on_restart: called with the service's name after each restart.
    """

    def __init__(
        self,
        services: Iterable[LocalService],
        log_dir: Path,
        *,
        restart: bool = True,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self._services = {s.name: s for s in services}
        self._log_dir = log_dir
        self._restart = restart
        self._on_restart = on_restart
        self._env: dict[str, dict[str, str]] = {}
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.processes: dict[str, ServiceProcess] = {}
        self.unavailable: dict[str, str] = {}
        self.restarts: dict[str, int] = {}

    @property
    def endpoints(self) -> dict[str, str]:
        """name -> ``127.0.0.1:port`` of every started service."""
        return {name: process.target for name, process in self.processes.items()}

    def start(self) -> dict[str, str]:
        """Sets up and starts every service; returns the endpoints of those that run."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # The services share this machine's CPUs: each gets its share of torch threads
        # (unless the user or its table sets UMLIP_TORCH_THREADS).
        share = str(max(1, available_cpus() // max(1, len(self._services))))
        for service in self._services.values():
            env = dict(service.env)
            if "UMLIP_TORCH_THREADS" not in os.environ:
                env.setdefault("UMLIP_TORCH_THREADS", share)
            self._env[service.name] = env
            try:
                python = ensure_environment(service)
                process = self._process(service, python, env).start()
            except (LauncherError, ServiceStartError) as error:
                self.unavailable[service.name] = _first_line_of_cause(str(error))
                logger.info("%s not started: %s", service.name, error)
                continue
            self.processes[service.name] = process
        if self._restart and self.processes:
            self._watchdog = threading.Thread(
                target=self._watch, name="fleet-watchdog", daemon=True
            )
            self._watchdog.start()
        return self.endpoints

    def _process(
        self, service: LocalService, python: Path, env: Mapping[str, str]
    ) -> ServiceProcess:
        return ServiceProcess(
            python=python,
            module=service.module,
            env=env,
            log_path=self._log_dir / f"{service.name}.log",
            start_timeout_s=600,
        )

    def _watch(self) -> None:
        """Restarts, on the same port, every service whose process has exited."""
        while not self._stopping.wait(CHECK_INTERVAL_S):
            for name, process in list(self.processes.items()):
                code = process.returncode_if_exited()
                if code is None or self._stopping.is_set():
                    continue
                logger.warning("%s died (exit %s); restarting on port %d", name, code, process.port)
                service = self._services[name]
                env = {**self._env[name], "UMLIP_PORT": str(process.port)}
                try:
                    self.processes[name] = self._process(service, service.python, env).start()
                except ServiceStartError as error:
                    logger.error("restart of %s failed: %s", name, error)
                    continue  # tried again at the next check
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if self._on_restart:
                    self._on_restart(name)

    def stop(self) -> None:
        """Stops the watchdog, then every started service gracefully."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        for process in self.processes.values():
            process.stop()
        self.processes.clear()

    def __enter__(self) -> LocalFleet:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


#: The harness's log prefix ("2026-12-02 11:33:58,428 ERROR umlip_serve.server: ").
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ [\w.]+: ")


def _first_line_of_cause(text: str) -> str:
    """The most telling line of a service's failure log (its last error line), without
    the log's time, level and logger."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return _LOG_PREFIX.sub("", (errors or lines or [text])[-1].strip())
