"""An in-process EMT batch evaluator for workflow and pipeline tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ase import Atoms
from ase.calculators.emt import EMT

from umlip_orchestrator.evaluation import Evaluation, StructureFailed


class ConcurrentEMT:
    """Thread-safe EMT evaluator recording each request and how many overlap in time."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.requests: list[list[str]] = []
        self.atoms_per_request: list[int] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def __call__(self, batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.requests.append(
                [a.info.get("job") or a.info.get("material_id", "") for a in batch]
            )
            self.atoms_per_request.append(sum(len(a) for a in batch))
        time.sleep(self.delay_s)
        out: list[Evaluation | StructureFailed] = []
        for atoms in batch:
            if "Xe" in atoms.get_chemical_symbols():
                out.append(StructureFailed("UNSUPPORTED_ELEMENT", "no EMT for Xe"))
                continue
            copy = atoms.copy()
            copy.calc = EMT()
            out.append(
                Evaluation(copy.get_potential_energy(), copy.get_forces(), copy.get_stress())
            )
        with self._lock:
            self.active -= 1
        return out
