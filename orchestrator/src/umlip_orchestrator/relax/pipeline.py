"""Continuous batching: every kind of job of every material in one stream of requests.

:func:`run_continuously` keeps a service busy with whatever work there is: structures to
relax with any number of :class:`RelaxSettings` (the cell relaxation of new materials,
the fixed-cell relaxation of relaxed-ion deformed cells) and single evaluations (the
clamped-ion deformed cells), side by side in the same ``Calculate`` request. A job
leaves as soon as it is done and the next job from the :class:`JobQueue` takes its
place, so requests stay full until the queue runs dry; the caller may push new jobs
(the deformed cells of a material that just relaxed) while it iterates.

The active structures are split into ``in_flight`` slots, each one request: while one
slot's request is being computed by the service, the others take their optimiser step
and send theirs, so the service never waits for the client (with ``in_flight=2``, the
default of the workflow). Each slot holds one vectorized lane per relaxation setting
(:class:`~umlip_orchestrator.relax.engine._Batch`); every structure follows ASE's
trajectory alone, whichever structures share its requests.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from ase import Atoms

from umlip_orchestrator.evaluation import BatchEvaluator, Evaluation, StructureFailed
from umlip_orchestrator.relax.batching import plain_copy
from umlip_orchestrator.relax.engine import _Batch
from umlip_orchestrator.relax.settings import LockstepStats, RelaxResult, RelaxSettings
from umlip_orchestrator.relax.structures import Structure, nan_result

K = TypeVar("K")

logger = logging.getLogger(__name__)

#: A finished job: a relaxation's result, or the evaluation of a single-point job.
JobOutcome = RelaxResult | Evaluation | StructureFailed


@dataclass(frozen=True)
class Job(Generic[K]):
    """One structure to compute.

    Attributes:
        key: returned with the outcome.
        atoms: the structure (copied; the caller's is never modified).
        relax: how to relax it, or None for one evaluation (energy, forces, stress).
    """

    key: K
    atoms: Atoms
    relax: RelaxSettings | None


class JobQueue(Generic[K]):
    """Jobs waiting for a place: pushed ones first (in order), then the feeder's.

    Args:
        feeder: called for another job when nothing pushed is waiting; None when it has
            no more (it is not called again after that). Lets a caller pull new work
            (the next material) only when there is room for it.
    """

    def __init__(self, feeder: Callable[[], Job[K] | None] | None = None) -> None:
        self._waiting: deque[Job[K]] = deque()
        self._feeder = feeder
        self._next_fed: Job[K] | None = None

    def push(self, job: Job[K]) -> None:
        """Queues ``job`` ahead of everything the feeder has not yet produced."""
        self._waiting.append(job)

    def peek(self) -> Job[K] | None:
        """The next job without taking it, or None if there is none."""
        if self._waiting:
            return self._waiting[0]
        if self._next_fed is None and self._feeder is not None:
            self._next_fed = self._feeder()
            if self._next_fed is None:
                self._feeder = None
        return self._next_fed

    def pop(self) -> Job[K]:
        """Takes the job :meth:`peek` shows (call it first)."""
        if self._waiting:
            return self._waiting.popleft()
        job, self._next_fed = self._next_fed, None
        if job is None:
            raise IndexError("no job waiting")
        return job


class _Slot(Generic[K]):
    """The structures of one request: a vectorized lane per relaxation setting, plus
    the single evaluations."""

    def __init__(self) -> None:
        self.lanes: dict[RelaxSettings, _Batch[K]] = {}
        self.singles: list[tuple[K, Atoms]] = []
        self.atoms = 0

    def __len__(self) -> int:
        return sum(len(lane) for lane in self.lanes.values()) + len(self.singles)

    def fill(
        self, queue: JobQueue[K], max_structures: int, max_atoms: int | None
    ) -> list[tuple[K, JobOutcome]]:
        """Takes jobs until the slot is full; returns the jobs that failed to start."""
        failed: list[tuple[K, JobOutcome]] = []
        while len(self) < max_structures:
            job = queue.peek()
            if job is None:
                break
            n_atoms = len(job.atoms)
            if max_atoms is not None and len(self) and self.atoms + n_atoms > max_atoms:
                break  # a structure larger than the budget still goes, alone
            queue.pop()
            if job.relax is None:
                self.singles.append((job.key, plain_copy(job.atoms)))
                self.atoms += n_atoms
                continue
            try:
                structure = Structure.start(job.key, job.atoms, job.relax)
            except Exception as exc:
                logger.debug("setting up the relaxation of %r failed", job.key, exc_info=True)
                error = f"{type(exc).__name__}: {exc}"
                failed.append((job.key, nan_result(plain_copy(job.atoms), 0, error)))
                continue
            lane = self.lanes.get(job.relax)
            if lane is None:
                lane = self.lanes[job.relax] = _Batch(job.relax)
            lane.add(structure)
            self.atoms += n_atoms
        return failed

    def request(self) -> tuple[list[Atoms], list[int]]:
        """The structures to evaluate now, and how many of them each lane owns."""
        snapshots: list[Atoms] = []
        sizes: list[int] = []
        for lane in self.lanes.values():
            part = lane.snapshots()
            snapshots.extend(part)
            sizes.append(len(part))
        snapshots.extend(atoms for _, atoms in self.singles)
        return snapshots, sizes

    def advance(
        self,
        snapshots: list[Atoms],
        sizes: list[int],
        outcomes: list[Evaluation | StructureFailed],
    ) -> list[tuple[K, JobOutcome]]:
        """Hands each lane its evaluations (one optimiser step); returns what finished."""
        finished: list[tuple[K, JobOutcome]] = []
        start = 0
        for (settings, lane), size in zip(list(self.lanes.items()), sizes, strict=True):
            done = lane.advance(snapshots[start : start + size], outcomes[start : start + size])
            start += size
            for key, result in done:
                self.atoms -= len(result.atoms)
                finished.append((key, result))
            if not len(lane):
                del self.lanes[settings]
        for (key, atoms), outcome in zip(self.singles, outcomes[start:], strict=True):
            self.atoms -= len(atoms)
            finished.append((key, outcome))
        self.singles = []
        return finished


def run_continuously(
    queue: JobQueue[K],
    evaluate: BatchEvaluator,
    *,
    max_active: int = 64,
    max_atoms: int | None = None,
    in_flight: int = 2,
    stats: LockstepStats | None = None,
) -> Iterator[tuple[K, JobOutcome]]:
    """Computes every job of ``queue``; yields (key, outcome) as each job finishes.

    Args:
        queue: the jobs; the caller may push more while iterating (they are taken at
            the next refill).
        evaluate: evaluates a batch; called from worker threads when ``in_flight`` > 1
            (the gRPC client is thread-safe). A :class:`StructureFailed` fails only its
            structure; an exception stops everything and propagates.
        max_active: the most structures active over all slots, >= 1.
        max_atoms: the most atoms in one request (the service's ``max_batch_atoms``);
            a single larger structure still goes alone. None: no bound.
        in_flight: requests in flight at once (slots), >= 1; 1 evaluates in the
            caller's thread.
        stats: counters updated in place.

    Returns:
        An iterator of (key, outcome) in order of completion: a :class:`RelaxResult` for
        relaxation jobs, an :class:`Evaluation` or :class:`StructureFailed` for
        single-point jobs.

    Raises:
        ValueError: a bad ``max_active``, ``max_atoms`` or ``in_flight``; while
            iterating, an evaluator result list of the wrong length.
    """
    for name, value in (("max_active", max_active), ("in_flight", in_flight)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if max_atoms is not None and (not isinstance(max_atoms, int) or max_atoms < 1):
        raise ValueError(f"max_atoms must be an int >= 1 or None, got {max_atoms!r}")
    return _drive(queue, evaluate, max_active, max_atoms, in_flight, stats)


def _drive(
    queue: JobQueue[K],
    evaluate: BatchEvaluator,
    max_active: int,
    max_atoms: int | None,
    in_flight: int,
    stats: LockstepStats | None,
) -> Iterator[tuple[K, JobOutcome]]:
    per_slot = max(1, -(-max_active // in_flight))
    slots: list[_Slot[K]] = [_Slot() for _ in range(in_flight)]
    sent: deque[tuple[_Slot[K], list[Atoms], list[int], Future[list], float]] = deque()
    pool = ThreadPoolExecutor(max_workers=in_flight) if in_flight > 1 else None

    def send(slot: _Slot[K]) -> None:
        snapshots, sizes = slot.request()
        future: Future[list] = Future()
        if pool is None:
            try:
                future.set_result(list(evaluate(snapshots)))
            except BaseException as exc:  # re-raised by result() below
                future.set_exception(exc)
        else:
            future = pool.submit(lambda: list(evaluate(snapshots)))
        sent.append((slot, snapshots, sizes, future, time.perf_counter()))

    try:
        while True:
            idle = [slot for slot in slots if all(slot is not s[0] for s in sent)]
            for slot in idle:
                yield from slot.fill(queue, per_slot, max_atoms)
                if len(slot):
                    send(slot)
            if not sent:
                return
            slot, snapshots, sizes, future, started = sent.popleft()
            outcomes = future.result()
            if stats is not None:
                stats.record(len(snapshots), time.perf_counter() - started)
            if len(outcomes) != len(snapshots):
                raise ValueError(
                    f"evaluator returned {len(outcomes)} results for {len(snapshots)} structures"
                )
            yield from slot.advance(snapshots, sizes, outcomes)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def relax_vectorized(
    jobs: Iterable[tuple[K, Atoms]],
    evaluate: BatchEvaluator,
    settings: RelaxSettings,
    *,
    max_active: int = 64,
    stats: LockstepStats | None = None,
) -> Iterator[tuple[K, RelaxResult]]:
    """Relaxes many structures together, one ``evaluate`` call per optimiser step.

    Same contract, arguments and errors as
    :func:`~umlip_orchestrator.relax.lockstep.relax_in_lockstep`, in the caller's thread
    without worker threads: :func:`run_continuously` with one request in flight and one
    relaxation setting. Each structure follows ASE's FIRE run alone on it (on a
    ``FrechetCellFilter`` with ``relax_cell``, optionally with ``FixSymmetry``), to
    rounding; results come in order of completion.
    """
    pairs = iter(jobs)

    def feed() -> Job[K] | None:
        pair = next(pairs, None)
        return None if pair is None else Job(pair[0], pair[1], settings)

    outcomes = run_continuously(
        JobQueue(feed), evaluate, max_active=max_active, in_flight=1, stats=stats
    )
    return outcomes  # type: ignore[return-value]  # relaxation jobs only
