"""Lockstep batched relaxation with ASE's FIRE, FrechetCellFilter and FixSymmetry.

Many structures relax together; each optimiser step of all active structures is one
call of a :data:`~umlip_orchestrator.evaluation.BatchEvaluator` (SCIENCE.md section 1,
DESIGN.md "Data flow" item 3).
"""

from umlip_orchestrator.relax.batching import EvaluationCalculator
from umlip_orchestrator.relax.lockstep import relax_in_lockstep, relax_structure
from umlip_orchestrator.relax.settings import LockstepStats, RelaxResult, RelaxSettings

__all__ = [
    "EvaluationCalculator",
    "LockstepStats",
    "RelaxResult",
    "RelaxSettings",
    "relax_in_lockstep",
    "relax_structure",
]
