"""SevenNet as a umlip :class:`Potential`: one batched forward pass per call.

SevenNet runs in float32 only (its graph builder casts every input to float32), whatever
``UMLIP_DTYPE`` says; ``GetModelInfo`` reports float32. Its internal stress
(``inferred_stress``) is the negative virial over the volume in eV/Å^3 with the opposite
of ASE's sign and the Voigt order xx yy zz xy yz zx; the adapter negates and reorders it
(proven by the finite-difference tests). Graphs go through the model in as few passes as
fit its edge budget (:mod:`umlip_serve.passes`: :attr:`SevenNetPotential.cpu_edges_per_pass`
on a CPU, sized to the memory on a GPU at about 0.12 MB per edge, measured on CPU;
``UMLIP_MAX_EDGES_PER_PASS`` when set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import sevenn._keys as keys
import torch
from sevenn import util
from sevenn.atom_graph_data import AtomGraphData
from sevenn.train.dataload import unlabeled_atoms_to_graph
from torch_geometric.data import Batch

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
from umlip_sevennet.checkpoint import DEFAULT_CHECKPOINT, resolve_checkpoint

#: SevenNet's stress order xx yy zz xy yz zx taken to ASE's xx yy zz yz xz xy.
TO_ASE_VOIGT = [0, 1, 2, 4, 5, 3]


def device_memory_bytes(device: str) -> int | None:
    """Total memory of the GPU ``device`` names; None for a CPU."""
    target = torch.device(device)
    return torch.cuda.get_device_properties(target).total_memory if target.type == "cuda" else None


class SevenNetPotential(Potential):
    """SevenNet; outputs in eV, eV/Å and eV/Å^3 (Voigt xx yy zz yz xz xy, tensile > 0)."""

    name = "sevennet"
    supported_dtypes = ("float32",)
    #: Most directed edges in one forward pass on a CPU (a memory bound; a larger
    #: structure runs alone); on a GPU the budget follows its memory.
    cpu_edges_per_pass: ClassVar[int] = 10_000
    #: Memory of one edge in a pass with forces and stress (measured on CPU).
    bytes_per_edge: ClassVar[float] = 0.12e6

    def load(self) -> ModelInfo:
        """Loads a pretrained SevenNet (default 7net-0) or a checkpoint file."""
        torch.set_num_threads(self.settings.torch_threads)
        name, path, self._modal = resolve_checkpoint(self.settings.checkpoint or DEFAULT_CHECKPOINT)
        self.check_checkpoint(path)
        try:
            checkpoint = util.load_checkpoint(str(path))
            config = checkpoint.config
            model = checkpoint.build_model()
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise CalculatorSetupError(f"cannot load SevenNet from {path}: {error}") from error
        modals = sorted(model.modal_map or {})
        if modals and self._modal not in modals:
            raise CalculatorSetupError(f"{name} needs a modal: give NAME@MODAL, one of {modals}")
        model.set_is_batch_data(True)
        self._model = model.to(self.settings.device).eval()
        self._cutoff = float(config[keys.CUTOFF])
        self.passes = EdgeBudget.for_potential(self, device_memory_bytes(self.settings.device))
        versions = package_versions("sevenn", "torch", "e3nn", "torch_geometric", "numpy")
        return ModelInfo(
            model_version=versions["sevenn"],
            checkpoint_name=name if self._modal is None else f"{name}@{self._modal}",
            checkpoint_sha256=file_sha256(path),
            supported_atomic_numbers=frozenset(int(z) for z in config[keys.TYPE_MAP]),
            cutoff=self._cutoff,
            package_versions=versions,
            dtype="float32",
            device=str(next(self._model.parameters()).device),
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Builds one graph per structure, then runs the graphs as one model batch."""
        results: list[StructureResult | None] = [None] * batch.n_structures
        graphs, owners = [], []
        for index, atoms in enumerate(batch_to_atoms(batch)):
            graph = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self._cutoff))
            if self._modal is not None:
                graph[keys.DATA_MODALITY] = self._modal
            graphs.append(graph)
            owners.append(index)

        def run_pass(chunk: list[int]) -> None:
            output = self._model(Batch.from_data_list([graphs[i] for i in chunk]).to(self._device))
            energies = output[keys.PRED_TOTAL_ENERGY].detach().cpu().double().numpy()
            forces = output[keys.PRED_FORCE].detach().cpu().double().numpy()
            stresses = -output[keys.PRED_STRESS].detach().cpu().double().numpy()[:, TO_ASE_VOIGT]
            bounds = np.cumsum([0] + [int(graphs[i][keys.NUM_ATOMS]) for i in chunk])
            for k, i in enumerate(chunk):
                results[owners[i]] = StructureOutput(
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
