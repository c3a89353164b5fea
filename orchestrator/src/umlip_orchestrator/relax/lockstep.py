"""Lockstep batched relaxation: ASE's FIRE per structure, one evaluator call per step.

Every job gets its own worker thread running exactly ASE's recipe (FIRE on a
``FrechetCellFilter``, or on the atoms at fixed cell, optionally with ``FixSymmetry``)
with an :class:`EvaluationCalculator`. The generator's own thread drives the batches:
once every live worker waits for an evaluation it calls ``evaluate`` once with all of
them, so the evaluator (e.g. a gRPC stub) is only ever used from the caller's thread.
Finished structures are yielded and replaced by waiting jobs, keeping the batch full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
from ase import Atoms
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from umlip_orchestrator.evaluation import BatchEvaluator, Evaluation, StructureFailed
from umlip_orchestrator.relax.batching import (
    EvaluationCalculator,
    LockstepBarrier,
    RelaxationAborted,
    plain_copy,
)
from umlip_orchestrator.relax.settings import LockstepStats, RelaxResult, RelaxSettings

K = TypeVar("K")

logger = logging.getLogger(__name__)

_THREAD_PREFIX = "umlip-relax"


class _Progress:
    """What a worker knows about its relaxation so far (for the failure report)."""

    def __init__(self) -> None:
        self.optimizer: FIRE | None = None

    @property
    def steps(self) -> int:
        return 0 if self.optimizer is None else int(self.optimizer.nsteps)


def relax_structure(
    atoms: Atoms,
    calc: EvaluationCalculator,
    settings: RelaxSettings,
    progress: _Progress | None = None,
) -> RelaxResult:
    """Relaxes ``atoms`` in place with ASE's FIRE, evaluated through ``calc``.

    With ``relax_cell`` this is ``FIRE(FrechetCellFilter(atoms)).run(fmax, max_steps)``
    with ``FixSymmetry(atoms, symprec)`` (which first refines the symmetry of ``atoms``,
    as ASE does). At fixed cell the cell must not change, so FixSymmetry is built on a
    copy (no refinement of ``atoms``) with ``adjust_cell=False``, and FIRE runs on
    ``atoms`` directly.

    Args:
        atoms: the structure; modified in place; its constraints are replaced.
        calc: the calculator to attach.
        settings: the relaxation settings.
        progress: receives the optimiser, so a caller can report steps on failure.

    Returns:
        The result (``error`` is None).

    Raises:
        StructureFailed: the potential could not evaluate the structure.
        Exception: anything the optimiser or the symmetry analysis raised.
    """
    atoms.calc = calc
    del atoms.constraints
    if settings.fix_symmetry:
        if settings.relax_cell:
            atoms.set_constraint(FixSymmetry(atoms, symprec=settings.symprec))
        else:
            atoms.set_constraint(
                FixSymmetry(atoms.copy(), symprec=settings.symprec, adjust_cell=False)
            )
    target = FrechetCellFilter(atoms) if settings.relax_cell else atoms
    optimizer = FIRE(target, logfile=None)
    if progress is not None:
        progress.optimizer = optimizer
    converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps))
    if calc.last_atoms is None or calc.last_evaluation is None:
        raise RuntimeError("the optimiser finished without evaluating the structure")
    return _result(calc.last_atoms, calc.last_evaluation, converged, int(optimizer.nsteps), None)


def relax_in_lockstep(
    jobs: Iterable[tuple[K, Atoms]],
    evaluate: BatchEvaluator,
    settings: RelaxSettings,
    *,
    max_active: int = 32,
    stats: LockstepStats | None = None,
) -> Iterator[tuple[K, RelaxResult]]:
    """Relaxes many structures together, one ``evaluate`` call per optimiser step.

    At most ``max_active`` structures are active; each step of all of them is one call
    of ``evaluate`` (in the caller's thread). A structure that converges, runs out of
    steps or fails is yielded at once and the next job takes its place. Each structure
    follows exactly the trajectory of ASE's FIRE run alone on it (see
    :func:`relax_structure`). Jobs are read lazily, as places free up.

    Args:
        jobs: (key, structure) pairs; keys are returned with the results, structures are
            copied (the caller's are not modified; their calculators and constraints are
            ignored).
        evaluate: evaluates a batch; a :class:`StructureFailed` in its output fails only
            that structure, an exception it raises stops the whole relaxation.
        settings: the relaxation settings.
        max_active: the most structures relaxed (and evaluated) together, >= 1.
        stats: counters updated in place (evaluate calls, structures per call).

    Yields:
        (key, result) as each structure finishes, in order of completion.

    Raises:
        Exception: whatever ``evaluate`` (or iterating ``jobs``) raised, after every
            worker thread has stopped. A result list of the wrong length raises
            ``ValueError``.
    """
    if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
        raise ValueError(f"max_active must be an int >= 1, got {max_active!r}")
    return _drive(iter(jobs), evaluate, settings, max_active, stats)


def _drive(
    jobs: Iterator[tuple[K, Atoms]],
    evaluate: BatchEvaluator,
    settings: RelaxSettings,
    max_active: int,
    stats: LockstepStats | None,
) -> Iterator[tuple[K, RelaxResult]]:
    barrier = LockstepBarrier()
    threads: dict[int, threading.Thread] = {}
    keys: dict[int, K] = {}
    next_slot = 0
    exhausted = False
    try:
        while True:
            while not exhausted and len(threads) < max_active:
                job = next(jobs, None)
                if job is None:
                    exhausted = True
                    break
                key, atoms = job
                slot, next_slot = next_slot, next_slot + 1
                keys[slot] = key
                barrier.register(slot)
                thread = threading.Thread(
                    target=_work,
                    args=(slot, atoms.copy(), settings, barrier),
                    name=f"{_THREAD_PREFIX}-{slot}",
                    daemon=True,
                )
                threads[slot] = thread
                thread.start()
            if not threads:
                return
            finished = barrier.wait_until_idle()
            if finished:
                for slot, result in finished:
                    threads.pop(slot).join()
                    yield keys.pop(slot), result
                continue  # refill, so newcomers join the next batch
            pending = barrier.take_pending()
            slots = sorted(pending)
            batch = [pending[slot] for slot in slots]
            start = time.perf_counter()
            outcomes = list(evaluate(batch))
            if stats is not None:
                stats.record(len(batch), time.perf_counter() - start)
            if len(outcomes) != len(batch):
                raise ValueError(
                    f"evaluator returned {len(outcomes)} results for {len(batch)} structures"
                )
            barrier.respond(dict(zip(slots, outcomes, strict=True)))
    finally:
        barrier.abort()
        for thread in threads.values():
            thread.join()


def _work(slot: int, atoms: Atoms, settings: RelaxSettings, barrier: LockstepBarrier) -> None:
    """Body of one worker thread: relaxes ``atoms`` and reports to ``barrier``."""
    calc = EvaluationCalculator(barrier.requester(slot))
    progress = _Progress()
    outcome: RelaxResult | None = None
    try:
        outcome = relax_structure(atoms, calc, settings, progress)
    except RelaxationAborted:
        outcome = None
    except StructureFailed as exc:
        outcome = _failure(atoms, calc, progress, f"{exc.code}: {exc}")
    except BaseException as exc:  # report anything else as this structure's failure
        logger.debug("relaxation of slot %d failed", slot, exc_info=True)
        outcome = _failure(atoms, calc, progress, f"{type(exc).__name__}: {exc}")
    finally:
        barrier.finish(slot, outcome)


def _failure(
    atoms: Atoms, calc: EvaluationCalculator, progress: _Progress, error: str
) -> RelaxResult:
    """The result of a failed structure: its last evaluated state, or NaN."""
    if calc.last_atoms is not None and calc.last_evaluation is not None:
        return _result(calc.last_atoms, calc.last_evaluation, False, progress.steps, error)
    n_atoms = len(atoms)
    return RelaxResult(
        atoms=plain_copy(atoms),
        converged=False,
        steps=progress.steps,
        energy=float("nan"),
        forces=np.full((n_atoms, 3), np.nan),
        stress=np.full(6, np.nan),
        error=error,
    )


def _result(
    atoms: Atoms, evaluation: Evaluation, converged: bool, steps: int, error: str | None
) -> RelaxResult:
    """A result from an evaluated structure (copied, constraint-free)."""
    return RelaxResult(
        atoms=plain_copy(atoms),
        converged=converged,
        steps=steps,
        energy=float(evaluation.energy),
        forces=np.array(evaluation.forces, dtype=np.float64),
        stress=np.array(evaluation.stress, dtype=np.float64),
        error=error,
    )
