"""The CHGNet adapter in-process: in-band failures, requested properties, chunking."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from umlip_chgnet import CHGNetPotential
from umlip_serve import (
    ALL_PROPERTIES,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    atoms_to_batch,
)
from umlip_serve.testing import (
    assert_only_requested_properties,
    assert_passes_survive_running_out_of_memory,
    assert_split_passes_agree,
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
    assert_only_requested_properties(potential)


def test_passes_split_by_edges_give_the_same_results(potential: CHGNetPotential) -> None:
    assert_split_passes_agree(potential)


def test_a_pass_that_runs_out_of_memory_is_split(potential: CHGNetPotential) -> None:
    assert_passes_survive_running_out_of_memory(potential, torch.cuda.OutOfMemoryError)
