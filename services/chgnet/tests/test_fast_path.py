"""The adapter's one-backward-pass :func:`predict` agrees with chgnet's ``predict_graph``.

Both run the same float32 forward pass, so energies agree to rounding; forces and stress
differ only in the float32 summation order of the backward pass (one plain pass here,
two ``create_graph=True`` passes in chgnet). Measured when this test was written: at
most 5e-5 eV/Å (the 100-atom frame; the error grows with the number of summed terms) and
3e-5 GPa. That the forces and stress are the energy's derivatives is checked through the
server by the conformance suite's finite-difference tests (``test_conformance.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from pymatgen.io.ase import AseAtomsAdaptor
from test_conformance import conformance_structures

from umlip_chgnet import CHGNetPotential
from umlip_chgnet.potential import predict

ATOL_ENERGY = 1e-6  # eV/atom: the same forward pass
ATOL_FORCES = 1e-4  # eV/Å, twice the largest float32 reordering difference measured
ATOL_STRESS = 1e-4  # GPa, three times the largest measured


@pytest.fixture(scope="module")
def structures(mptrj_frames: list[Atoms]) -> list[Atoms]:
    """Sheared NaCl, left-handed GaAs, 16-atom Si, and MPtrj frames of 9-100 atoms.

    The last MPtrj frame is also given with two cell vectors swapped (left-handed).
    """
    frames = [mptrj_frames[i] for i in (0, 1, 2, 18, 25)]  # 9, 18, 6, 83 and 100 atoms
    left = frames[0].copy()
    left.set_cell(left.cell.array[[1, 0, 2]])  # same crystal, negative determinant
    assert np.linalg.det(left.cell.array) < 0
    return [*conformance_structures(), *frames, left]


@pytest.mark.parametrize("task", ["efs", "ef", "e"])
def test_predict_matches_predict_graph(
    potential: CHGNetPotential, structures: list[Atoms], task: str
) -> None:
    model = potential._model
    graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(a)) for a in structures]
    reference = model.predict_graph(graphs, task=task, batch_size=len(graphs))
    fast = predict(model, graphs, forces="f" in task, stress="s" in task)
    assert len(fast) == len(reference) == len(structures)
    for atoms, ours, theirs in zip(structures, fast, reference, strict=True):
        assert set(ours) == set(task)
        np.testing.assert_allclose(ours["e"], theirs["e"], rtol=0, atol=ATOL_ENERGY)
        if "f" in task:
            assert ours["f"].shape == (len(atoms), 3)
            np.testing.assert_allclose(ours["f"], theirs["f"], rtol=0, atol=ATOL_FORCES)
        if "s" in task:
            assert ours["s"].shape == (3, 3)
            np.testing.assert_allclose(ours["s"], theirs["s"], rtol=0, atol=ATOL_STRESS)
