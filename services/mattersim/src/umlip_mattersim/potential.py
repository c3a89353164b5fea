"""MatterSim (M3GNet) as a umlip :class:`Potential`: one forward pass per batch.

All structures of a call go through mattersim's ``build_dataloader`` as one batch and
``Potential.predict_properties`` (what ``MatterSimCalculator`` does for one structure);
should that pass run out of memory, it is split (:class:`umlip_serve.passes.EdgeBudget`,
counted in atoms: mattersim builds the graphs inside its dataloader) instead of failing
the call.
MatterSim builds its graphs in float32 only, so the model runs in float32 whatever
``UMLIP_DTYPE`` asks, and GetModelInfo says so. Its stress is in GPa with ASE's sign:
it is converted to eV/Å^3 and reshaped to Voigt order here.
"""

from __future__ import annotations

from collections.abc import Sequence

import mattersim
import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from mattersim.datasets.utils.build import build_dataloader
from mattersim.forcefield.potential import Potential as MatterSimModel

from umlip_mattersim.checkpoint import resolve_checkpoint
from umlip_serve import (
    GPA_PER_EV_PER_A3,
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

_VERSIONED = ("mattersim", "torch", "e3nn", "torch-geometric", "pymatgen-core", "ase", "numpy")


class MatterSimPotential(Potential):
    """MatterSim; energies in eV, forces eV/Å, stress eV/Å^3 (ASE sign, Voigt xx..xy)."""

    name = "mattersim"
    supported_dtypes = ("float32",)

    def load(self) -> ModelInfo:
        """Loads ``settings.checkpoint`` (a pretrained name or a ``.pth`` file)."""
        torch.set_num_threads(self.settings.torch_threads)
        checkpoint_name, path = resolve_checkpoint(self.settings.checkpoint)
        self.check_checkpoint(path)
        try:
            self._model = MatterSimModel.from_checkpoint(
                load_path=str(path), device=self.settings.device, load_training_state=False
            )
        except Exception as error:
            raise CalculatorSetupError(
                f"cannot read MatterSim checkpoint {path}: {error}"
            ) from error
        args = self._model.model.model_args
        self.passes = EdgeBudget(None, self.name, unit="atoms")
        self._cutoff = float(args["cutoff"])
        self._threebody_cutoff = float(args["threebody_cutoff"])
        return ModelInfo(
            model_version=mattersim.__version__,
            checkpoint_name=checkpoint_name,
            checkpoint_sha256=file_sha256(path),
            # The one-hot embedding covers Z = 0..max_z (94 for the pretrained models).
            supported_atomic_numbers=frozenset(range(1, int(args["max_z"]) + 1)),
            cutoff=self._cutoff,
            package_versions=package_versions(*_VERSIONED),
            dtype="float32",
            device=str(self._model.device),
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Runs the structures (validated by the harness) as one graph batch."""
        structures = list(batch_to_atoms(batch))
        results: list[StructureResult | None] = [None] * len(structures)

        def run_pass(chunk: list[int]) -> None:
            outputs = self._predict([structures[i] for i in chunk], properties)
            for i, output in zip(chunk, outputs, strict=True):
                results[i] = output

        self.passes.run([len(atoms) for atoms in structures], run_pass)
        return fill_missing(results)

    def _predict(
        self, structures: list[Atoms], properties: Sequence[Property]
    ) -> list[StructureOutput]:
        """One dataloader batch, one forward pass; outputs in structure order."""
        want_forces = Property.FORCES in properties
        want_stress = Property.STRESS in properties
        loader = build_dataloader(
            structures,
            only_inference=True,
            cutoff=self._cutoff,
            threebody_cutoff=self._threebody_cutoff,
            batch_size=len(structures),
        )
        energies, forces, stresses = self._model.predict_properties(
            loader, include_forces=want_forces or want_stress, include_stresses=want_stress
        )
        if len(energies) != len(structures):
            raise RuntimeError(f"MatterSim returned {len(energies)} of {len(structures)} results")
        return [
            StructureOutput(
                energy=float(energies[i]) if Property.ENERGY in properties else None,
                forces=np.asarray(forces[i], dtype=np.float64) if want_forces else None,
                stress=full_3x3_to_voigt_6_stress(
                    np.asarray(stresses[i], np.float64) / GPA_PER_EV_PER_A3
                )
                if want_stress
                else None,
            )
            for i in range(len(structures))
        ]
