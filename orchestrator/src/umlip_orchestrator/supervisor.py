"""``umlip services up|down|status``: local services kept running in the background.

``up`` starts a detached supervisor process. It starts every requested service (each
in its own environment, see :mod:`umlip_orchestrator.launcher`), writes the endpoint
list ``<state_dir>/endpoints.json``, and restarts a service that dies on the same
port, so clients keep their address. ``down`` sends the supervisor SIGTERM: it stops
every service gracefully and removes the endpoint list.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from umlip_orchestrator.launcher import (
    LauncherError,
    LocalFleet,
    LocalService,
    read_service_list,
    with_checkpoints,
    write_endpoints,
)
from umlip_orchestrator.service_descriptions import SERVICES_DIR_VARIABLE, find_services_dir

logger = logging.getLogger("umlip_orchestrator.supervisor")

ENDPOINTS = "endpoints.json"
PID_FILE = "supervisor.pid"
PIDS = "pids.json"


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of a live supervisor of ``state_dir``, or None."""
    try:
        pid = int((state_dir / PID_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_supervisor(
    state_dir: Path,
    names: list[str],
    timeout_s: float = 900.0,
    checkpoints: Mapping[str, str] | None = None,
) -> Path:
    """Starts the supervisor detached; returns the endpoint list once it is written.

    ``checkpoints`` maps service names to ``UMLIP_CHECKPOINT`` values (see
    :func:`umlip_orchestrator.launcher.with_checkpoints`).

    Raises:
        LauncherError: it is already running, or it exited before writing the list.
    """
    with_checkpoints((read_service_list()[n] for n in names), checkpoints or {})  # fail early
    if supervisor_pid(state_dir) is not None:
        raise LauncherError(f"services already up (supervisor of {state_dir}); run `down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoints = state_dir / ENDPOINTS
    endpoints.unlink(missing_ok=True)
    with (state_dir / "supervisor.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "umlip_orchestrator.supervisor",
                str(state_dir),
                *names,
                *(f"--checkpoint={name}={value}" for name, value in (checkpoints or {}).items()),
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, SERVICES_DIR_VARIABLE: str(find_services_dir())},
        )
    deadline = time.monotonic() + timeout_s
    while not endpoints.exists():
        if process.poll() is not None:
            raise LauncherError(f"supervisor exited; see {state_dir / 'supervisor.log'}")
        if time.monotonic() > deadline:
            raise LauncherError("services did not start in time")
        time.sleep(0.2)
    return endpoints


def stop_supervisor(state_dir: Path, timeout_s: float = 120.0) -> bool:
    """Stops the supervisor (and so every service); False if none was running."""
    pid = supervisor_pid(state_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while supervisor_pid(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


def supervise(state_dir: Path, services: list[LocalService]) -> int:
    """The supervisor's main loop (runs in the detached process); its fleet restarts a
    service that dies on the same port."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    (state_dir / PID_FILE).write_text(str(os.getpid()))
    fleet = LocalFleet(
        services, state_dir / "logs", on_restart=lambda _: _write_pids(state_dir, fleet)
    )
    fleet.start()
    for name, reason in fleet.unavailable.items():
        logger.error("%s unavailable: %s", name, reason)
    write_endpoints(state_dir / "unavailable.json", fleet.unavailable)
    _write_pids(state_dir, fleet)
    write_endpoints(state_dir / ENDPOINTS, fleet.endpoints)
    try:
        stop.wait()
    finally:
        fleet.stop()
        (state_dir / ENDPOINTS).unlink(missing_ok=True)
        (state_dir / PID_FILE).unlink(missing_ok=True)
    return 0


def _write_pids(state_dir: Path, fleet: LocalFleet) -> None:
    """Records each service's process id in ``<state_dir>/pids.json``."""
    pids = {name: str(process.pid) for name, process in fleet.processes.items()}
    write_endpoints(state_dir / PIDS, pids)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the detached supervisor process."""
    parser = argparse.ArgumentParser(prog="umlip-supervisor")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    available = read_service_list()
    checkpoints = dict(c.split("=", 1) for c in args.checkpoint)
    services = with_checkpoints([available[n] for n in args.names], checkpoints)
    return supervise(args.state_dir, services)


if __name__ == "__main__":
    sys.exit(main())
