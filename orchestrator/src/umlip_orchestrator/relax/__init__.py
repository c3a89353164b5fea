"""Lockstep batched relaxation with ASE's FIRE, FrechetCellFilter and FixSymmetry.

Many structures relax together; each optimiser step of all active structures is one
call of a :data:`~umlip_orchestrator.evaluation.BatchEvaluator` (SCIENCE.md section 1,
DESIGN.md "Data flow" item 3). :func:`relax_vectorized` (the workflow's engine) does it
with array operations over all structures; :func:`relax_in_lockstep` runs ASE's own
objects in one thread per structure and stays the reference it is tested against.
"""

from umlip_orchestrator.relax.batching import EvaluationCalculator
from umlip_orchestrator.relax.lockstep import relax_in_lockstep, relax_structure
from umlip_orchestrator.relax.pipeline import Job, JobQueue, relax_vectorized, run_continuously
from umlip_orchestrator.relax.settings import LockstepStats, RelaxResult, RelaxSettings

__all__ = [
    "EvaluationCalculator",
    "Job",
    "JobQueue",
    "LockstepStats",
    "RelaxResult",
    "RelaxSettings",
    "relax_in_lockstep",
    "relax_structure",
    "relax_vectorized",
    "run_continuously",
]
