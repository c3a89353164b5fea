"""Continuous batching: mixed jobs share requests, two requests are in flight, and every
job's outcome equals the one it gets alone.

The reference for each relaxation is :func:`relax_vectorized` run on that job alone
(itself checked against ASE step by step in ``test_engine.py``); for a single-point job,
the evaluator called on that structure alone. The evaluator is EMT, deterministic, so
outcomes must agree exactly whatever structures shared a request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from emt_evaluator import ConcurrentEMT

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax import Job, JobQueue, RelaxResult, RelaxSettings
from umlip_orchestrator.relax.pipeline import relax_vectorized, run_continuously

CELL = RelaxSettings(fmax=0.02, max_steps=200)
FIXED = RelaxSettings(fmax=0.02, max_steps=200, relax_cell=False, symprec=1e-5)


def tagged(name: str, atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.info["job"] = name
    return atoms


def mixed_jobs() -> list[Job[str]]:
    """Cell relaxations, fixed-cell relaxations and single points of EMT crystals."""
    rng = np.random.default_rng(7)
    jobs: list[Job[str]] = []
    for i, (symbol, a) in enumerate([("Cu", 3.70), ("Al", 4.00), ("Ni", 3.48), ("Pd", 3.95)]):
        cell = bulk(symbol, "fcc", a=a, cubic=True)
        cell.positions += rng.normal(0, 0.04, cell.positions.shape)
        jobs.append(Job(f"cell{i}", tagged(f"cell{i}", cell), CELL))
        strained = cell.copy()
        strained.set_cell(cell.cell[:] @ np.diag([1.01, 0.99, 1.0]), scale_atoms=True)
        jobs.append(Job(f"fixed{i}", tagged(f"fixed{i}", strained), FIXED))
        jobs.append(Job(f"single{i}", tagged(f"single{i}", strained * (2, 1, 1)), None))
    return jobs


def assert_same_relaxation(result: RelaxResult, reference: RelaxResult) -> None:
    assert result.steps == reference.steps and result.converged == reference.converged
    np.testing.assert_array_equal(result.atoms.positions, reference.atoms.positions)
    np.testing.assert_array_equal(result.atoms.cell[:], reference.atoms.cell[:])
    assert result.energy == reference.energy


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_mixed_jobs_match_each_job_alone(in_flight: int) -> None:
    jobs = mixed_jobs()
    evaluator = ConcurrentEMT(delay_s=0.002)
    outcomes = dict(
        run_continuously(
            JobQueue(_feeder(jobs)),
            evaluator,
            max_active=6,
            max_atoms=20,
            in_flight=in_flight,
        )
    )
    assert set(outcomes) == {job.key for job in jobs}
    for job in jobs:
        outcome = outcomes[job.key]
        if job.relax is None:
            assert isinstance(outcome, Evaluation)
            (alone,) = ConcurrentEMT()([job.atoms])
            assert isinstance(alone, Evaluation)
            np.testing.assert_array_equal(outcome.stress, alone.stress)
            continue
        assert isinstance(outcome, RelaxResult) and outcome.ok, job.key
        [(_, reference)] = relax_vectorized([(job.key, job.atoms)], ConcurrentEMT(), job.relax)
        assert_same_relaxation(outcome, reference)
    # Requests mixed kinds of job, stayed within the budgets, and overlapped in time.
    kinds = [{name.rstrip("0123456789") for name in request} for request in evaluator.requests]
    assert any(len(k) >= 2 for k in kinds)
    assert all(n <= 20 for n in evaluator.atoms_per_request)
    assert all(len(r) <= -(-6 // in_flight) for r in evaluator.requests)
    assert evaluator.most_active == 1 if in_flight == 1 else 2 <= evaluator.most_active <= in_flight


def _feeder(jobs: list[Job[str]]):
    remaining = iter(jobs)
    return lambda: next(remaining, None)


def test_jobs_pushed_while_iterating_are_computed_first() -> None:
    """The workflow pushes a relaxed material's deformed cells; they go ahead of the
    feeder's next material, and the feeder is read only when there is room."""
    fed: list[str] = []
    materials = iter([("cu", 3.70), ("al", 4.00), ("ni", 3.48)])

    def feed() -> Job[str] | None:
        entry = next(materials, None)
        if entry is None:
            return None
        name, a = entry
        fed.append(name)
        symbol = name.capitalize()
        return Job(name, tagged(name, bulk(symbol, "fcc", a=a, cubic=True)), CELL)

    queue: JobQueue[str] = JobQueue(feed)
    evaluator = ConcurrentEMT()
    order: list[str] = []
    for key, outcome in run_continuously(queue, evaluator, max_active=1, in_flight=1):
        order.append(key)
        if key in ("cu", "al", "ni"):
            assert isinstance(outcome, RelaxResult) and outcome.ok
            assert fed[-1] == key  # the next material was not read before there was room
            for k in range(2):
                queue.push(Job(f"{key}-d{k}", tagged(f"{key}-d{k}", outcome.atoms), None))
    assert order == ["cu", "cu-d0", "cu-d1", "al", "al-d0", "al-d1", "ni", "ni-d0", "ni-d1"]


def test_failures_stay_with_their_job_and_errors_propagate() -> None:
    xenon = tagged("xe", bulk("Xe", "fcc", a=6.2))
    jobs = [Job("xe-cell", xenon, CELL), Job("xe-single", xenon, None)]
    jobs.append(Job("cu", tagged("cu", bulk("Cu", "fcc", a=3.7)), CELL))
    jobs.append(Job("empty", Atoms(), CELL))
    outcomes = dict(run_continuously(JobQueue(_feeder(jobs)), ConcurrentEMT(), in_flight=2))
    assert isinstance(outcomes["xe-single"], StructureFailed)
    assert isinstance(outcomes["xe-cell"], RelaxResult) and not outcomes["xe-cell"].ok
    assert "UNSUPPORTED_ELEMENT" in str(outcomes["xe-cell"].error)
    assert isinstance(outcomes["empty"], RelaxResult) and "no atoms" in str(outcomes["empty"].error)
    assert isinstance(outcomes["cu"], RelaxResult) and outcomes["cu"].ok

    def broken(batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        raise ConnectionError("service gone")

    with pytest.raises(ConnectionError, match="service gone"):
        list(run_continuously(JobQueue(_feeder(jobs)), broken, in_flight=2))
    with pytest.raises(ValueError, match="results for"):
        list(run_continuously(JobQueue(_feeder(jobs)), lambda batch: [], in_flight=2))
    for bad in ({"max_active": 0}, {"in_flight": 0}, {"max_atoms": 0}, {"in_flight": True}):
        with pytest.raises(ValueError):
            run_continuously(JobQueue(_feeder(jobs)), ConcurrentEMT(), **bad)  # type: ignore[arg-type]
