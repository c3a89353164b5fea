"""``umlip services up|down|status``: the local launcher from the command line."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from umlip_orchestrator.client import PotentialClient, ServiceError
from umlip_orchestrator.launcher import LauncherError, read_endpoints, read_service_list
from umlip_orchestrator.supervisor import (
    ENDPOINTS,
    start_supervisor,
    stop_supervisor,
    supervisor_pid,
)
from umlip_wire.tls import ClientTls
from umlip_wire.tls import channel as tls_channel


def select_models(models: str | None) -> list[str]:
    """The services named in ``models`` (comma-separated), or the default set.

    Raises:
        LauncherError: an unknown name.
    """
    available = read_service_list()
    if not models:
        return [name for name, service in available.items() if service.default]
    names = [n.strip() for n in models.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise LauncherError(f"unknown model(s) {unknown}; known: {sorted(available)}")
    return names


def services_command(args: argparse.Namespace) -> int:
    """Runs ``umlip services ACTION``; returns the exit code."""
    try:
        if args.action == "up":
            names = select_models(args.models)
            print(f"umlip: starting {', '.join(names)} (environments are created on first use)")
            start_supervisor(args.state_dir, names, checkpoints=dict(args.checkpoint or ()))
            return _status(args)
        if args.action == "down":
            stopped = stop_supervisor(args.state_dir)
            print("umlip: services stopped" if stopped else "umlip: no services were running")
            return 0
        return _status(args)
    except LauncherError as error:
        print(f"umlip services: {error}", file=sys.stderr)
        return 2


def _health(target: str) -> str:
    with tls_channel(target, ClientTls.from_env()) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as error:
            return f"unreachable ({error.code().name})"  # type: ignore[attr-defined]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _status(args: argparse.Namespace) -> int:
    if supervisor_pid(args.state_dir) is None:
        print("umlip: no services running (start them with `umlip services up`)")
        return 1
    endpoints = read_endpoints(args.state_dir / ENDPOINTS)
    unavailable_file = args.state_dir / "unavailable.json"
    unavailable = read_endpoints(unavailable_file) if unavailable_file.exists() else {}
    print(f"{'service':<12}{'address':<22}{'health':<14}model")
    for name, target in endpoints.items():
        health = _health(target)
        model = ""
        if health == "SERVING":
            try:
                with PotentialClient(target, max_retries=0, timeout_s=5) as client:
                    info = client.info()
                model = f"{info.model_name} {info.model_version} ({info.checkpoint_name})"
            except ServiceError as error:
                model = str(error)
        print(f"{name:<12}{target:<22}{health:<14}{model}")
    for name, reason in unavailable.items():
        print(f"{name:<12}{'-':<22}{'not started':<14}{reason}")
    return 0
