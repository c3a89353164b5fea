"""Ray nodes for tests: `ray start` processes on loopback addresses, stopped afterwards.

Ray replaces 127.0.0.1 by the machine's routable address, so test nodes use other
loopback addresses (127.0.0.2, 127.0.0.3, ...), which it keeps; traffic stays on lo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: Environment of every test Ray process: no usage stats, token authentication off
#: (the cluster is reachable on loopback only).
RAY_TEST_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        assert process.poll() is None, f"ray exited with {process.returncode}"
        assert time.monotonic() < deadline, f"nothing listens on {host}:{port}"
        time.sleep(0.5)


def start_node(
    log: Path,
    *,
    node_ip: str,
    head_port: int | None = None,
    address: str | None = None,
    num_cpus: int = 1,
    resources: str | None = None,
) -> subprocess.Popen:
    """Starts a head (``head_port``) or a node joining ``address``; blocks in the
    foreground so that :func:`stop_node` ends exactly this node."""
    args = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--block",
        f"--node-ip-address={node_ip}",
        f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
    ]
    if head_port is not None:
        args += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        args += [f"--address={address}"]
    if resources:
        args += [f"--resources={resources}"]
    return subprocess.Popen(
        args,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **RAY_TEST_ENV},
    )


def stop_node(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
