"""The adapter in-process: property subsets, non-periodic structures, float32, info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from umlip_mace import MACEPotential
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
def potential(tiny_model: Path) -> MACEPotential:
    loaded = MACEPotential(Settings(checkpoint=str(tiny_model), dtype="float64"))
    loaded.load()
    return loaded


def test_model_info_is_truthful(tiny_model: Path, training_frames: list[Atoms]) -> None:
    info = MACEPotential(Settings(checkpoint=str(tiny_model), dtype="float32")).load()
    assert info.checkpoint_name == "tiny.model"
    assert info.checkpoint_sha256 == file_sha256(tiny_model)
    assert info.supported_atomic_numbers == {int(z) for a in training_frames for z in a.numbers}
    assert info.cutoff == pytest.approx(4.5)
    assert info.dtype == "float32"
    assert info.package_versions["e3nn"] == "0.4.4"
    assert info.package_versions["torch"].startswith("2.13.0")


def test_property_subsets(potential: MACEPotential, training_frames: list[Atoms]) -> None:
    batch = atoms_to_batch(training_frames[:4])
    full = potential.calculate(batch, ALL_PROPERTIES)
    energy_only = potential.calculate(batch, (Property.ENERGY,))
    for a, b in zip(full, energy_only, strict=True):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        assert b.forces is None and b.stress is None
        np.testing.assert_allclose(a.energy, b.energy, atol=1e-10)


def test_non_periodic_structure(potential: MACEPotential) -> None:
    """Forces of a molecule are fine (its stress is refused by the harness before the
    adapter sees it: the conformance suite's ``test_non_periodic_structure_rules``)."""
    co2 = molecule("CO2")  # elements the tiny model knows
    (forces_only,) = potential.calculate(atoms_to_batch([co2]), (Property.ENERGY, Property.FORCES))
    assert isinstance(forces_only, StructureOutput) and forces_only.forces.shape == (3, 3)


def test_float32_agrees_with_float64(
    potential: MACEPotential, tiny_model: Path, training_frames: list[Atoms]
) -> None:
    single = MACEPotential(Settings(checkpoint=str(tiny_model), dtype="float32"))
    single.load()
    batch = atoms_to_batch(training_frames[:6])
    for a, b in zip(
        potential.calculate(batch, ALL_PROPERTIES),
        single.calculate(batch, ALL_PROPERTIES),
        strict=True,
    ):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        np.testing.assert_allclose(a.energy, b.energy, rtol=1e-5)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-3)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-4)


def test_a_pass_that_runs_out_of_memory_is_split(
    potential: MACEPotential, training_frames: list[Atoms]
) -> None:
    assert_passes_survive_running_out_of_memory(
        potential, torch.cuda.OutOfMemoryError, training_frames[:4]
    )
