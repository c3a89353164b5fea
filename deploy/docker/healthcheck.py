"""Container health probe: exit 0 when the local potential service is SERVING.

Docker's HEALTHCHECK (and anything else that has only a shell) runs it with the
service's own environment: it asks the standard ``grpc.health.v1`` service at
``UMLIP_HOST:UMLIP_PORT`` (a wildcard host is asked on loopback; with ``UMLIP_PORT=0``
the port is read from ``UMLIP_PORT_FILE``). Kubernetes uses its built-in gRPC probes
instead, except with mutual TLS (deploy/k8s-tls), which they cannot speak.

Usage: python healthcheck.py [TARGET] [--service NAME] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from umlip_wire.tls import ClientTls
from umlip_wire.tls import channel as tls_channel

_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def default_target() -> str:
    """``host:port`` of the service this container runs, from its ``UMLIP_*`` settings."""
    host = os.environ.get("UMLIP_HOST", "")
    host = "127.0.0.1" if host in _WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get("UMLIP_PORT") or "50051"
    if port == "0":
        port_file = os.environ.get("UMLIP_PORT_FILE")
        if not port_file or not Path(port_file).exists():
            raise SystemExit("UMLIP_PORT=0 and no UMLIP_PORT_FILE written yet")
        port = Path(port_file).read_text().strip()
    return f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """Returns 0 if SERVING, 1 otherwise (the status is printed either way)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help="host:port (default: from UMLIP_*)")
    parser.add_argument("--service", default="", help="health service name ('' = server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    target = args.target or default_target()
    try:
        with tls_channel(target, ClientTls.from_env()) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as error:
        print(f"{target}: {error.code().name}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
