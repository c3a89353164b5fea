"""The SevenNet adapter in-process: molecules, requested properties, chunking."""

from __future__ import annotations

import torch

from umlip_serve.testing import (
    assert_molecule_and_crystal_in_one_batch,
    assert_only_requested_properties,
    assert_passes_survive_running_out_of_memory,
    assert_split_passes_agree,
)
from umlip_sevennet import SevenNetPotential


def test_molecule_and_crystal_in_one_batch(potential: SevenNetPotential) -> None:
    """A molecule's energy and forces come with a crystal's in one batch (its stress is
    refused by the harness before the adapter sees it: the conformance suite's
    ``test_non_periodic_structure_rules``)."""
    assert_molecule_and_crystal_in_one_batch(potential)


def test_only_requested_properties(potential: SevenNetPotential) -> None:
    assert_only_requested_properties(potential)


def test_passes_split_by_edges_give_the_same_results(potential: SevenNetPotential) -> None:
    assert_split_passes_agree(potential)


def test_a_pass_that_runs_out_of_memory_is_split(potential: SevenNetPotential) -> None:
    assert_passes_survive_running_out_of_memory(potential, torch.cuda.OutOfMemoryError)
