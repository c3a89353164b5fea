"""Start and stop a potential service as a real process (tests, benchmarks, launcher).

The service runs with its own Python interpreter (its own environment), binds a free
loopback port (``UMLIP_PORT=0``) and writes it to ``UMLIP_PORT_FILE``; we then wait
until its ``grpc.health.v1`` status is SERVING.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from umlip_wire.tls import ClientTls
from umlip_wire.tls import channel as tls_channel


class ServiceStartError(RuntimeError):
    """The service process exited or did not become SERVING in time."""


def wait_until_serving(target: str, timeout_s: float, tls: ClientTls | None = None) -> None:
    """Polls ``grpc.health.v1`` at ``target`` until SERVING (over TLS with ``tls``).

    Raises:
        TimeoutError: not SERVING within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    with tls_channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{target} not SERVING after {timeout_s:.0f} s")


class ServiceProcess:
    """A potential service subprocess on a free loopback port.

    Args:
        python: interpreter of the service's environment.
        module: module to run with ``-m`` (e.g. "umlip_emt").
        env: extra ``UMLIP_*`` (or other) variables for the process.
        log_path: file receiving the process's stdout and stderr (default: a temp file).
        start_timeout_s: how long to wait for SERVING.
    """

    def __init__(
        self,
        *,
        python: str | Path,
        module: str,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self._python = str(python)
        self._module = module
        self._env = dict(env or {})
        self._workdir = Path(tempfile.mkdtemp(prefix=f"umlip-{module}-"))
        self.log_path = log_path or self._workdir / "service.log"
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` of the running service."""
        if self.port is None:
            raise RuntimeError("service not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the service."""
        if self._process is None:
            raise RuntimeError("service not started")
        return self._process.pid

    def start(self) -> ServiceProcess:
        """Starts the process and waits until it is SERVING."""
        port_file = self._workdir / "port"
        env = {
            **os.environ,
            "UMLIP_HOST": "127.0.0.1",
            "UMLIP_PORT": "0",
            "UMLIP_PORT_FILE": str(port_file),
            "OMP_NUM_THREADS": "1",
            **self._env,
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self._python, "-m", self._module], env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + self._start_timeout_s
        while not port_file.exists():
            if self._process.poll() is not None:
                raise ServiceStartError(f"{self._module} exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceStartError(f"{self._module} bound no port:\n{self.log_tail()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        while True:  # wait for SERVING, noticing a process that exits while loading
            if self._process.poll() is not None:
                raise ServiceStartError(f"{self._module} exited while loading:\n{self.log_tail()}")
            try:
                wait_until_serving(
                    self.target,
                    min(2.0, max(0.1, deadline - time.monotonic())),
                    ClientTls.from_env({**os.environ, **self._env}),
                )
                return self
            except TimeoutError as error:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServiceStartError(f"{error}\n{self.log_tail()}") from error

    def returncode_if_exited(self) -> int | None:
        """The exit code if the process has exited, else None."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the service log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait for the graceful stop (SIGKILL after ``timeout_s``); exit code."""
        if self._process is None:
            return None
        (self._workdir / "port").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._workdir.rmdir()  # left in place while it holds the default log
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
