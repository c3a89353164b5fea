"""The adapter in-process: property subsets, non-periodic structures, float32, info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from umlip_mattersim import MatterSimPotential
from umlip_serve import (
    ALL_PROPERTIES,
    Property,
    Settings,
    StructureOutput,
    atoms_to_batch,
    file_sha256,
)
from umlip_serve.testing import assert_passes_survive_running_out_of_memory


@pytest.fixture(scope="module")
def potential(tiny_model: Path) -> MatterSimPotential:
    loaded = MatterSimPotential(Settings(checkpoint=str(tiny_model), dtype="float32"))
    loaded.load()
    return loaded


def test_model_info_is_truthful(tiny_model: Path) -> None:
    """float64 asked, float32 reported: MatterSim builds its graphs in float32 only."""
    info = MatterSimPotential(Settings(checkpoint=str(tiny_model), dtype="float64")).load()
    assert info.checkpoint_name == "tiny.pth"
    assert info.checkpoint_sha256 == file_sha256(tiny_model)
    assert info.supported_atomic_numbers == set(range(1, 95))
    assert info.cutoff == pytest.approx(5.0)
    assert info.dtype == "float32"
    e3nn_version = tuple(int(part) for part in info.package_versions["e3nn"].split(".")[:2])
    assert e3nn_version >= (0, 5)
    assert info.package_versions["torch"].startswith("2.13.0")


def test_property_subsets(potential: MatterSimPotential, training_frames: list[Atoms]) -> None:
    batch = atoms_to_batch(training_frames[:4])
    full = potential.calculate(batch, ALL_PROPERTIES)
    energy_only = potential.calculate(batch, (Property.ENERGY,))
    forces_only = potential.calculate(batch, (Property.FORCES,))
    for a, b, c in zip(full, energy_only, forces_only, strict=True):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        assert isinstance(c, StructureOutput)
        assert b.forces is None and b.stress is None and c.energy is None and c.stress is None
        np.testing.assert_allclose(a.energy, b.energy, rtol=1e-6)
        np.testing.assert_allclose(a.forces, c.forces, atol=1e-5)


def test_non_periodic_structure(potential: MatterSimPotential) -> None:
    """Forces of a molecule are fine (its stress is refused by the harness before the
    adapter sees it: the conformance suite's ``test_non_periodic_structure_rules``)."""
    water = molecule("H2O")
    (forces_only,) = potential.calculate(
        atoms_to_batch([water]), (Property.ENERGY, Property.FORCES)
    )
    assert isinstance(forces_only, StructureOutput) and forces_only.forces.shape == (3, 3)


def test_a_pass_that_runs_out_of_memory_is_split(
    potential: MatterSimPotential, training_frames: list[Atoms]
) -> None:
    assert_passes_survive_running_out_of_memory(
        potential, torch.cuda.OutOfMemoryError, training_frames[:4]
    )
