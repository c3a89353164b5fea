"""ASE's effective-medium theory potential (EMT) as a umlip :class:`Potential`.

EMT is analytic and cheap, so it is the fast test double of the whole system. It has
no batched mode: ``calculate`` loops over structures, which is fine for an analytic
potential (model adapters must batch, see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from ase.calculators.emt import EMT, parameters
from ase.data import atomic_numbers

from umlip_serve import (
    ModelInfo,
    Potential,
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
    batch_to_atoms,
    package_versions,
)

#: EMT's elements: Al, Cu, Ag, Au, Ni, Pd, Pt, H, C, N, O.
EMT_ATOMIC_NUMBERS = frozenset(atomic_numbers[symbol] for symbol in parameters)


class EMTPotential(Potential):
    """ASE EMT; energies in eV, forces eV/Å, stress eV/Å^3 with ASE's sign already."""

    name = "emt"
    supported_dtypes = ("float64",)

    def load(self) -> ModelInfo:
        """Nothing to load: EMT is analytic (checkpoint identity is the ASE version)."""
        versions = package_versions("ase", "numpy")
        return ModelInfo(
            model_version=versions["ase"],
            checkpoint_name="ase-emt-analytic",
            supported_atomic_numbers=EMT_ATOMIC_NUMBERS,
            cutoff=0.0,
            package_versions=versions,
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Evaluates each structure with a fresh EMT calculator."""
        results: list[StructureResult] = []
        for atoms in batch_to_atoms(batch):
            atoms.calc = EMT()
            try:
                results.append(
                    StructureOutput(
                        energy=atoms.get_potential_energy()
                        if Property.ENERGY in properties
                        else None,
                        forces=atoms.get_forces() if Property.FORCES in properties else None,
                        stress=atoms.get_stress(voigt=True)
                        if Property.STRESS in properties
                        else None,
                    )
                )
            except (ValueError, RuntimeError, NotImplementedError) as error:
                results.append(
                    StructureError(
                        code=StructureErrorCode.CALCULATION_FAILED,
                        message=f"{type(error).__name__}: {error}",
                    )
                )
        return results
