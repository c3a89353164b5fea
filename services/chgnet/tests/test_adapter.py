"""The CHGNet adapter in-process: in-band failures, requested properties, chunking."""

from __future__ import annotations

import copy

import numpy as np
from ase import Atoms
from ase.build import bulk

from umlip_chgnet import CHGNetPotential
from umlip_serve import (
    ALL_PROPERTIES,
    Property,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    atoms_to_batch,
)


def test_isolated_atom_fails_in_band(potential: CHGNetPotential) -> None:
    """(A molecule never reaches the adapter: CHGNet declares
    ``requires_full_periodicity`` and the harness refuses it, which the conformance
    suite's ``test_non_periodic_structure_rules`` checks through the server.)"""
    lonely = Atoms("Cu", cell=np.eye(3) * 12.0, pbc=True)  # no neighbour within 6 Å
    silicon = bulk("Si", "diamond", a=5.43)
    results = potential.calculate(atoms_to_batch([lonely, silicon]), ALL_PROPERTIES)
    assert isinstance(results[0], StructureError)
    assert results[0].code is StructureErrorCode.CALCULATION_FAILED
    assert "isolated atom" in results[0].message
    assert isinstance(results[1], StructureOutput)
    assert CHGNetPotential.requires_full_periodicity


def test_only_requested_properties(potential: CHGNetPotential) -> None:
    silicon = bulk("Si", "diamond", a=5.43)
    (result,) = potential.calculate(atoms_to_batch([silicon]), (Property.ENERGY,))
    assert isinstance(result, StructureOutput)
    assert result.energy is not None and result.forces is None and result.stress is None


def test_passes_split_by_edges_give_the_same_results(potential: CHGNetPotential) -> None:
    structures = []
    for seed, a in enumerate((5.40, 5.43, 5.47)):
        atoms = bulk("Si", "diamond", a=a, cubic=True)
        atoms.rattle(0.03, seed=seed)
        structures.append(atoms)
    batch = atoms_to_batch(structures)
    together = potential.calculate(batch, ALL_PROPERTIES)
    split = copy.copy(potential)  # shares the loaded model
    split.max_edges_per_pass = 1  # one structure per pass
    apart = split.calculate(batch, ALL_PROPERTIES)
    for a, b in zip(together, apart, strict=True):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        np.testing.assert_allclose(a.energy, b.energy, atol=1e-4)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-4)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-6)
