"""Transport security: TLS and mutual TLS for services and their clients, from files.

A service serves TLS when it has a certificate and key (``UMLIP_TLS_CERT``,
``UMLIP_TLS_KEY``) and requires client certificates signed by ``UMLIP_TLS_CLIENT_CA``
when that is set (mutual TLS). Plaintext is the default only on a loopback address;
a service bound to any other address refuses to start without TLS unless
``UMLIP_ALLOW_PLAINTEXT=1`` says the network is private (a pod network behind a
NetworkPolicy, a compose network).

Clients (the orchestrator, the health probes) read ``UMLIP_TLS_CA`` (the CA that signed
the services' certificates) and, for mutual TLS, ``UMLIP_TLS_CLIENT_CERT`` and
``UMLIP_TLS_CLIENT_KEY``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from umlip_wire.errors import CalculatorSetupError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ::1."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CalculatorSetupError(f"cannot read the {what} {path}: {error}") from error


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """TLS credentials of a server (mutual TLS with ``client_ca``), or None for plaintext.

    Raises:
        CalculatorSetupError: only one of cert and key, a client CA without them, or a
            file that cannot be read.
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise CalculatorSetupError("UMLIP_TLS_CLIENT_CA needs UMLIP_TLS_CERT and UMLIP_TLS_KEY")
        return None
    if cert is None or key is None:
        raise CalculatorSetupError("UMLIP_TLS_CERT and UMLIP_TLS_KEY go together")
    chain, private_key = _read(cert, "certificate"), _read(key, "key")
    assert chain is not None and private_key is not None
    ca = _read(client_ca, "client CA")
    return grpc.ssl_server_credentials(
        [(private_key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


@dataclass(frozen=True)
class ClientTls:
    """How a client authenticates services (and itself, for mutual TLS).

    Attributes:
        ca: the CA certificate that signed the services' certificates (None: the
            system's roots).
        cert, key: this client's certificate and key, for mutual TLS.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise CalculatorSetupError("a client certificate and its key go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTls | None:
        """From ``UMLIP_TLS_CA``, ``UMLIP_TLS_CLIENT_CERT``, ``UMLIP_TLS_CLIENT_KEY``;
        None when none is set (plaintext)."""
        environ = os.environ if environ is None else environ
        values = [
            environ.get(f"UMLIP_TLS_{n}") or None for n in ("CA", "CLIENT_CERT", "CLIENT_KEY")
        ]
        if not any(values):
            return None
        ca, cert, key = (Path(v) if v else None for v in values)
        return cls(ca=ca, cert=cert, key=key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA certificate"),
            private_key=_read(self.key, "client key"),
            certificate_chain=_read(self.cert, "client certificate"),
        )


def channel(
    target: str,
    tls: ClientTls | None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to ``target``: TLS with ``tls``, plaintext without."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.credentials(), options=list(options))
