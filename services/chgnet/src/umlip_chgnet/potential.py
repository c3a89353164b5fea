"""CHGNet as a umlip :class:`Potential`: one batched forward pass per call.

CHGNet runs in float32 only (its graph code hard-codes ``torch.float32``), whatever
``UMLIP_DTYPE`` says; ``GetModelInfo`` reports float32. Its stress is (1/V) dE/d(strain)
in GPa, ASE's sign, but with V the *signed* cell determinant: chgnet 0.4.2 (and its ASE
calculator) flips the stress of a left-handed cell. The adapter converts GPa to eV/Å^3
and multiplies by the sign of the determinant (proven by the finite-difference tests).

Forces and stress come from one plain backward pass (:func:`predict`), not from
``CHGNet.predict_graph``: chgnet's predict path is its training path, which takes the
forces and the stress in two separate ``torch.autograd.grad`` calls, each with
``create_graph=True`` (a double-backward graph, for force and stress losses). For
inference that is most of the time; one ``torch.autograd.grad`` of the total energy
with respect to the positions and the strains together gives the same derivatives
(float32 summation order aside), about twice as fast (32 Si8 cells, one CPU thread).
It relies on two private pieces of chgnet 0.4.2 (pinned in ``uv.lock``):
``CHGNet._compute`` and ``BatchedGraph.from_graphs``; ``tests/test_fast_path.py``
compares :func:`predict` with ``predict_graph`` directly.

CHGNet's forward pass is memory-hungry (on CPU about 0.15 MB per directed edge of the
atom graph with forces and stress: 100 MPtrj frames in one pass exceeded 23 GB), so one
call's graphs go through the model in as few passes as fit its edge budget
(:mod:`umlip_serve.passes`: :attr:`CHGNetPotential.cpu_edges_per_pass` on a CPU, sized
to the memory on a GPU, ``UMLIP_MAX_EDGES_PER_PASS`` when set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress
from chgnet.graph import CrystalGraph
from chgnet.model import CHGNet
from chgnet.model.model import BatchedGraph
from pymatgen.core import Lattice, Structure

from umlip_chgnet.checkpoint import DEFAULT_CHECKPOINT, resolve_checkpoint
from umlip_serve import (
    GPA_PER_EV_PER_A3,
    CalculatorSetupError,
    ModelInfo,
    Potential,
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
    file_sha256,
    package_versions,
)
from umlip_serve.passes import EdgeBudget


def predict(
    model: CHGNet, graphs: Sequence[CrystalGraph], *, forces: bool, stress: bool
) -> list[dict[str, np.ndarray]]:
    """``model.predict_graph(graphs, task="e"/"ef"/"efs")`` in one pass, for inference.

    Same output as chgnet's: per graph "e" (eV/atom if ``model.is_intensive``, else eV),
    and as asked "f" (eV/Å) and "s" (3x3, GPa, signed volume), but one plain backward
    pass for forces and stress together instead of two double-backward-ready ones.
    Expects ``model`` in eval mode.
    """
    device = next(model.parameters()).device
    graphs = [g.to(device) for g in graphs]
    with torch.no_grad():  # the composition model does not depend on the geometry
        composition = 0 if model.composition_model is None else model.composition_model(graphs)
    with torch.set_grad_enabled(forces or stress):
        batched = BatchedGraph.from_graphs(
            graphs,
            bond_basis_expansion=model.bond_basis_expansion,
            angle_basis_expansion=model.angle_basis_expansion,
            compute_stress=stress,
        )
        prediction = model._compute(batched, compute_force=False, compute_stress=False)
    energy = prediction["e"]  # divided in place by the atoms per graph when intensive
    inputs = [*(batched.atom_positions if forces else ()), *(batched.strains if stress else ())]
    gradients: Sequence[torch.Tensor] = ()
    if inputs:
        # Seeding the backward pass with the atom counts differentiates the total energy.
        seed = prediction["atoms_per_graph"] if model.is_intensive else torch.ones_like(energy)
        gradients = torch.autograd.grad(energy, inputs, grad_outputs=seed.to(energy.dtype))
    outputs = [{"e": e} for e in (energy.detach() + composition).cpu().numpy()]
    if forces:
        for output, gradient in zip(outputs, gradients[: len(graphs)], strict=True):
            output["f"] = (-gradient).cpu().numpy()
    if stress:
        strain_gradients = gradients[len(inputs) - len(graphs) :]
        for output, gradient, volume in zip(
            outputs, strain_gradients, batched.volumes, strict=True
        ):
            output["s"] = (gradient * (1 / volume * GPA_PER_EV_PER_A3)).cpu().numpy()
    return outputs


def device_memory_bytes(device: str) -> int | None:
    """Total memory of the GPU ``device`` names; None for a CPU."""
    target = torch.device(device)
    return torch.cuda.get_device_properties(target).total_memory if target.type == "cuda" else None


class CHGNetPotential(Potential):
    """CHGNet; outputs in eV, eV/Å and eV/Å^3 (Voigt xx yy zz yz xz xy, tensile > 0)."""

    name = "chgnet"
    supported_dtypes = ("float32",)
    #: CHGNet's graphs are built for periodic crystals only (the harness enforces it).
    requires_full_periodicity = True
    #: Most directed atom-graph edges in one forward pass on a CPU (a memory bound; a
    #: larger structure runs alone); on a GPU the budget follows its memory.
    cpu_edges_per_pass: ClassVar[int] = 10_000
    #: Memory of one edge in a pass with forces and stress (measured on CPU, see above).
    bytes_per_edge: ClassVar[float] = 0.15e6

    def load(self) -> ModelInfo:
        """Loads a pretrained CHGNet (default 0.3.0) or a checkpoint file."""
        torch.set_num_threads(self.settings.torch_threads)
        checkpoint = self.settings.checkpoint or DEFAULT_CHECKPOINT
        name, path, pretrained = resolve_checkpoint(checkpoint)
        self.check_checkpoint(path)
        try:
            if pretrained:  # upstream's loader applies the per-version quirks (mlp_out_bias)
                model = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
            else:
                model = CHGNet.from_file(str(path))
            self._model = model.to(self.settings.device).eval()
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as error:
            raise CalculatorSetupError(f"cannot load CHGNet from {path}: {error}") from error
        self._model.graph_converter.set_isolated_atom_response("error")
        self.passes = EdgeBudget.for_potential(self, device_memory_bytes(self.settings.device))
        versions = package_versions("chgnet", "torch", "pymatgen", "numpy")
        n_elements = self._model.atom_embedding.embedding.num_embeddings
        return ModelInfo(
            model_version=versions["chgnet"],
            checkpoint_name=name,
            checkpoint_sha256=file_sha256(path),
            supported_atomic_numbers=frozenset(range(1, n_elements + 1)),
            cutoff=float(self._model.model_args["atom_graph_cutoff"]),
            package_versions=versions,
            dtype="float32",
            device=str(next(self._model.parameters()).device),
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Builds one graph per structure, then runs all graphs as one model batch."""
        results: list[StructureResult | None] = [None] * batch.n_structures
        graphs, owners = [], []
        for index in range(batch.n_structures):
            numbers, positions, cell, _ = batch.structure(index)
            structure = Structure(Lattice(cell), numbers, positions, coords_are_cartesian=True)
            try:
                graphs.append(self._model.graph_converter(structure))
            except (ValueError, RuntimeError) as error:  # e.g. an isolated atom
                results[index] = _failed(f"{type(error).__name__}: {error}")
                continue
            owners.append(index)

        def run_pass(chunk: list[int]) -> None:
            predictions = predict(
                self._model,
                [graphs[i] for i in chunk],
                forces=Property.FORCES in properties,
                stress=Property.STRESS in properties,
            )
            for i, prediction in zip(chunk, predictions, strict=True):
                results[owners[i]] = self._output(prediction, batch, owners[i], properties)

        self.passes.run([len(g.atom_graph) for g in graphs], run_pass)
        return [r if r is not None else _failed("not computed") for r in results]

    def _output(
        self,
        prediction: dict[str, np.ndarray],
        batch: StructureBatch,
        index: int,
        properties: Sequence[Property],
    ) -> StructureOutput:
        """Converts one structure's CHGNet prediction to wire units."""
        n_atoms = int(batch.atoms_per_structure[index])
        energy = float(prediction["e"]) * (n_atoms if self._model.is_intensive else 1)
        stress = None
        if Property.STRESS in properties:
            handedness = np.sign(np.linalg.det(batch.cells[index]))
            stress = full_3x3_to_voigt_6_stress(prediction["s"].astype(np.float64))
            stress = stress * handedness / GPA_PER_EV_PER_A3
        return StructureOutput(
            energy=energy if Property.ENERGY in properties else None,
            forces=prediction["f"].astype(np.float64) if Property.FORCES in properties else None,
            stress=stress,
        )


def _failed(message: str) -> StructureError:
    return StructureError(code=StructureErrorCode.CALCULATION_FAILED, message=message)
