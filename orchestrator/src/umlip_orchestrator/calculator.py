"""An ASE ``Calculator`` over a remote potential service, for any ASE workflow."""

from __future__ import annotations

from typing import Any, ClassVar

from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes

from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.evaluation import StructureFailed


class RemoteCalculator(Calculator):
    """Energy (eV), forces (eV/Å) and stress (eV/Å^3, ASE sign) from a umlip service.

    Example:
        >>> atoms.calc = RemoteCalculator(PotentialClient("127.0.0.1:50051"))
        >>> atoms.get_potential_energy()
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, client: PotentialClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client = client

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Evaluates ``atoms`` remotely (all three properties in one call)."""
        super().calculate(atoms, properties, system_changes)
        (result,) = self.client.calculate([self.atoms])
        if isinstance(result, StructureFailed):
            raise CalculationFailed(f"{self.client.target}: {result.code}: {result}")
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": result.forces.copy(),
            "stress": result.stress.copy(),
        }
