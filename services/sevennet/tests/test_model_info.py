"""GetModelInfo tells the truth about the served SevenNet, and checkpoints resolve."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import sevenn
from ase.build import bulk
from sevenn import util
from sevenn.calculator import SevenNetCalculator

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import (
    ALL_PROPERTIES,
    CalculatorSetupError,
    Settings,
    StructureOutput,
    atoms_to_batch,
    file_sha256,
)
from umlip_sevennet import SevenNetPotential
from umlip_wire.process import ServiceProcess

WEIGHTS_7NET_0 = (
    Path(sevenn.__file__).parent
    / "pretrained_potentials"
    / "SevenNet_0__11Jul2024"
    / "checkpoint_sevennet_0.pth"
)


def test_get_model_info(service: ServiceProcess) -> None:
    with grpc.insecure_channel(service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    config = util.load_checkpoint(str(WEIGHTS_7NET_0)).config
    assert info.model_name == "sevennet"
    assert info.checkpoint_name == "7net-0 (SevenNet_0__11Jul2024)"
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS_7NET_0)
    assert info.dtype == pb.DTYPE_FLOAT32  # sevenn casts inputs to float32
    assert info.device == "cpu"
    assert info.cutoff == pytest.approx(config["cutoff"])
    assert set(info.supported_atomic_numbers) == set(config["_type_map"])
    assert len(info.supported_atomic_numbers) == len(config["chemical_species"]) == 89
    assert info.package_versions["sevenn"] == "0.13.0"
    assert info.package_versions["torch"].startswith("2.13.0")
    assert info.package_versions["e3nn"] != "absent"


def test_checkpoint_file_path() -> None:
    info = SevenNetPotential(Settings(checkpoint=str(WEIGHTS_7NET_0))).load()
    assert info.checkpoint_name == WEIGHTS_7NET_0.name
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS_7NET_0)


def test_other_shipped_checkpoint_by_name() -> None:
    info = SevenNetPotential(Settings(checkpoint="7net-0_22May2024")).load()
    assert info.checkpoint_name == "7net-0_22May2024 (SevenNet_0__22May2024)"


def test_unknown_checkpoint_fails_setup() -> None:
    with pytest.raises(CalculatorSetupError, match="cannot find SevenNet checkpoint"):
        SevenNetPotential(Settings(checkpoint="7net-unknown")).load()


def test_multi_fidelity_checkpoint_needs_a_modal() -> None:
    with pytest.raises(CalculatorSetupError, match="needs a modal"):
        SevenNetPotential(Settings(checkpoint="7net-mf-0")).load()


def test_multi_fidelity_checkpoint_with_modal_matches_upstream() -> None:
    potential = SevenNetPotential(Settings(checkpoint="7net-mf-0@PBE"))
    assert potential.load().checkpoint_name == "7net-mf-0 (SevenNet_MF_0)@PBE"
    silicon = bulk("Si", "diamond", a=5.43, cubic=True)
    silicon.rattle(0.02, seed=0)
    (result,) = potential.calculate(atoms_to_batch([silicon]), ALL_PROPERTIES)
    assert isinstance(result, StructureOutput)
    silicon.calc = SevenNetCalculator("7net-mf-0", modal="PBE", device="cpu")
    np.testing.assert_allclose(result.energy, silicon.get_potential_energy(), atol=1e-4)
    np.testing.assert_allclose(result.stress, silicon.get_stress(voigt=True), atol=1e-6)
