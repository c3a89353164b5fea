"""TLS and mutual TLS between a real service process and the client.

Certificates are made in the test with the ``openssl`` command: a CA, a server
certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a second
CA with its own client certificate. The service requires client certificates of the
first CA; only a client with one (and trusting that CA) is served.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from ase.build import bulk

from umlip_orchestrator.client import PotentialClient, ServiceError
from umlip_orchestrator.evaluation import Evaluation
from umlip_wire.process import ServiceProcess, ServiceStartError
from umlip_wire.tls import ClientTls

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN=umlip test {name}", cwd=folder)  # fmt: skip


def make_signed(folder: Path, name: str, ca: str, alt_names: str | None = None) -> None:
    openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    extra: list[str] = []
    if alt_names:
        (folder / f"{name}.ext").write_text(f"subjectAltName={alt_names}\n")
        extra = ["-extfile", f"{name}.ext"]
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "ca")
    make_ca(folder, "other-ca")
    make_signed(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    make_signed(folder, "client", "ca")
    make_signed(folder, "intruder", "other-ca")
    return folder


@pytest.fixture(scope="module")
def mtls_service(emt_python: Path, certs: Path):
    env = {
        "UMLIP_TLS_CERT": str(certs / "server.pem"),
        "UMLIP_TLS_KEY": str(certs / "server.key"),
        "UMLIP_TLS_CLIENT_CA": str(certs / "ca.pem"),
        # The readiness probe of ServiceProcess is a client too.
        "UMLIP_TLS_CA": str(certs / "ca.pem"),
        "UMLIP_TLS_CLIENT_CERT": str(certs / "client.pem"),
        "UMLIP_TLS_CLIENT_KEY": str(certs / "client.key"),
    }
    with ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service:
        yield service


def calculate(target: str, tls: ClientTls | None) -> object:
    with PotentialClient(target, tls=tls, max_retries=1, backoff_s=0.1, timeout_s=5) as client:
        (result,) = client.calculate([bulk("Cu", "fcc", a=3.6)])
    return result


def test_a_client_with_the_right_certificate_is_served(
    mtls_service: ServiceProcess, certs: Path
) -> None:
    tls = ClientTls(ca=certs / "ca.pem", cert=certs / "client.pem", key=certs / "client.key")
    assert isinstance(calculate(mtls_service.target, tls), Evaluation)


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(("ca", None), id="no client certificate"),
        pytest.param(("ca", "intruder"), id="client certificate of another CA"),
        pytest.param(("other-ca", "client"), id="does not trust the server's CA"),
        pytest.param(None, id="plaintext"),
    ],
)
def test_other_clients_are_refused(
    mtls_service: ServiceProcess, certs: Path, client: tuple[str, str | None] | None
) -> None:
    tls = None
    if client is not None:
        ca, name = client
        tls = ClientTls(
            ca=certs / f"{ca}.pem",
            cert=certs / f"{name}.pem" if name else None,
            key=certs / f"{name}.key" if name else None,
        )
    with pytest.raises(ServiceError) as refused:
        calculate(mtls_service.target, tls)
    assert refused.value.code is grpc.StatusCode.UNAVAILABLE


def test_plaintext_off_loopback_needs_an_explicit_opt_in(emt_python: Path) -> None:
    service = ServiceProcess(
        python=emt_python, module="umlip_emt", env={"UMLIP_HOST": "0.0.0.0"}, start_timeout_s=60
    )
    with pytest.raises(ServiceStartError) as refused:
        service.start()
    assert "UMLIP_ALLOW_PLAINTEXT" in str(refused.value) or "UMLIP_ALLOW_PLAINTEXT" in (
        service.log_path.read_text()
    )
