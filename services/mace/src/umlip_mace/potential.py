"""MACE (mace-torch) as a umlip :class:`Potential`: one forward pass per batch.

Graphs are built as ``MACECalculator`` builds them (``config_from_atoms`` then
``AtomicData.from_config`` under the model's dtype), but for all structures of a batch,
joined with torch_geometric's ``Batch.from_data_list`` and run through the model once.
MACE's stress is already in eV/Å^3 with ASE's sign; it is only reshaped to Voigt order.
"""

from __future__ import annotations

from collections.abc import Sequence

import mace  # before e3nn: it lets e3nn 0.4.4 torch.load its constants
import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress
from mace import data as mace_data
from mace.tools import torch_geometric, torch_tools, utils

from umlip_mace.checkpoint import default_head, resolve_checkpoint
from umlip_serve import (
    CalculatorSetupError,
    ModelInfo,
    Potential,
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
    batch_to_atoms,
    file_sha256,
    fill_missing,
    package_versions,
)
from umlip_serve.checkpoint_scan import TENSOR_CHECKPOINT_GLOBALS
from umlip_serve.passes import EdgeBudget

#: Keys MACECalculator reads from ``Atoms.info`` (absent keys are simply unused).
_INFO_KEYS = {"total_spin": "spin", "total_charge": "charge", "external_field": "external_field"}


def _failed(message: str) -> StructureError:
    return StructureError(code=StructureErrorCode.CALCULATION_FAILED, message=message)


class MACEPotential(Potential):
    """MACE; energies in eV, forces eV/Å, stress eV/Å^3 (ASE sign, Voigt xx..xy)."""

    name = "mace"
    #: A MACE model file pickles the whole module: mace's and e3nn's classes, torch.nn
    #: containers and activations, and torch.fx graph modules (whose pickles carry their
    #: Python source, compiled on load: only a pinned sha256 makes a file from elsewhere
    #: fully safe). Anything else (os, subprocess, builtins.eval...) is refused.
    checkpoint_globals = (
        *TENSOR_CHECKPOINT_GLOBALS,
        "mace.",
        "e3nn.",
        "torch.nn.modules.",
        "torch.nn.parameter.",
        "torch.nn.functional.",
        "torch.fx.graph_module.reduce_graph_module",
        "torch.fx.graph_module._forward_from_src",
        "torch.fx._symbolic_trace.Tracer",
    )

    def load(self) -> ModelInfo:
        """Loads ``settings.checkpoint`` (a MACE-MP name or a model file) on the device."""
        torch.set_num_threads(self.settings.torch_threads)
        checkpoint_name, path = resolve_checkpoint(self.settings.checkpoint)
        self.check_checkpoint(path)
        self._device = torch.device(self.settings.device)
        try:
            model = torch.load(path, map_location=self._device, weights_only=False)
        except Exception as error:
            raise CalculatorSetupError(f"cannot read MACE checkpoint {path}: {error}") from error
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers"):
            raise CalculatorSetupError(f"{path} holds no MACE model (got {type(model).__name__})")
        self._dtype = self.settings.dtype
        model = model.double() if self._dtype == "float64" else model.float()
        for parameter in model.parameters():
            parameter.requires_grad = False
        self._model = model.to(self._device).eval()
        self._z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        self._r_max = float(model.r_max)
        self._heads: list[str] = list(getattr(model, "heads", None) or ["Default"])
        self._head = default_head(self._heads)
        # All of a call's graphs in one pass (or UMLIP_MAX_EDGES_PER_PASS edges); a pass
        # that runs out of memory is split instead of failing the call.
        self.passes = EdgeBudget(self.settings.max_edges_per_pass or None, self.name)
        return ModelInfo(
            model_version=mace.__version__,
            checkpoint_name=checkpoint_name,
            checkpoint_sha256=file_sha256(path),
            supported_atomic_numbers=frozenset(self._z_table.zs),
            cutoff=self._r_max,
            package_versions=package_versions("mace-torch", "torch", "e3nn", "ase", "numpy"),
            dtype=self._dtype,
            device=str(self._device),
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Builds one graph per structure, then runs them all in one forward pass."""
        results: list[StructureResult | None] = [None] * batch.n_structures
        graphs, rows = [], []
        keyspec = mace_data.KeySpecification(info_keys=_INFO_KEYS, arrays_keys={})
        with torch_tools.default_dtype(self._dtype):
            for index, atoms in enumerate(batch_to_atoms(batch)):
                try:
                    config = mace_data.config_from_atoms(
                        atoms, key_specification=keyspec, head_name=self._head
                    )
                    graphs.append(
                        mace_data.AtomicData.from_config(
                            config, z_table=self._z_table, cutoff=self._r_max, heads=self._heads
                        )
                    )
                except (ValueError, RuntimeError) as error:
                    results[index] = _failed(f"graph construction: {error}")
                    continue
                rows.append(index)

        def run_pass(chunk: list[int]) -> None:
            outputs = self._forward([graphs[i] for i in chunk], properties)
            for i, output in zip(chunk, outputs, strict=True):
                results[rows[i]] = output

        self.passes.run([int(g.edge_index.shape[1]) for g in graphs], run_pass)
        return fill_missing(results)

    def _forward(
        self, graphs: list[mace_data.AtomicData], properties: Sequence[Property]
    ) -> list[StructureOutput]:
        """One model call on the joined graphs; per-structure outputs in graph order."""
        want_forces = Property.FORCES in properties
        want_stress = Property.STRESS in properties
        data = torch_geometric.Batch.from_data_list(graphs)
        if self._device.type != "cpu":  # Batch.to walks every key even for a no-op
            data = data.to(self._device)
        out = self._model(
            data.to_dict(),
            training=False,
            compute_force=want_forces,
            compute_stress=want_stress,
        )
        energies = out["energy"].detach().cpu().numpy().astype(np.float64)
        forces = stress = None
        if want_forces:
            forces = out["forces"].detach().cpu().numpy().astype(np.float64)
        if want_stress:
            stress = out["stress"].detach().cpu().numpy().astype(np.float64)
        offsets = data["ptr"].cpu().numpy()
        return [
            StructureOutput(
                energy=float(energies[i]) if Property.ENERGY in properties else None,
                forces=None if forces is None else forces[offsets[i] : offsets[i + 1]],
                stress=None if stress is None else full_3x3_to_voigt_6_stress(stress[i]),
            )
            for i in range(len(graphs))
        ]
