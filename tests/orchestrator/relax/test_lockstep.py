"""Lockstep batched relaxation: same trajectories as ASE alone, real batching, no leaks.

The potential is ASE's EMT wrapped as an in-process :data:`BatchEvaluator`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax import (
    LockstepStats,
    RelaxResult,
    RelaxSettings,
    relax_in_lockstep,
)

EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})
SETTINGS = RelaxSettings(fmax=0.02, max_steps=300)


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas() -> Iterator[None]:
    """One BLAS thread: OpenBLAS threads spinning next to the relaxation threads on a
    small machine cost far more than the 3x3 algebra they would speed up."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - only a speed concern
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def emt_evaluate(batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
    """Evaluates every structure with EMT; elements EMT lacks fail in-band."""
    out: list[Evaluation | StructureFailed] = []
    for atoms in batch:
        unsupported = set(atoms.get_chemical_symbols()) - EMT_ELEMENTS
        if unsupported:
            out.append(StructureFailed("UNSUPPORTED_ELEMENT", f"no EMT for {sorted(unsupported)}"))
            continue
        atoms = atoms.copy()
        atoms.calc = EMT()
        out.append(
            Evaluation(
                energy=atoms.get_potential_energy(),
                forces=atoms.get_forces(),
                stress=atoms.get_stress(),
            )
        )
    return out


@dataclass
class RecordingEvaluator:
    """EMT evaluator that records each batch size and how many results were yielded."""

    batch_sizes: list[int] = field(default_factory=list)
    yielded_before: list[int] = field(default_factory=list)
    yielded: int = 0

    def __call__(self, batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        self.batch_sizes.append(len(batch))
        self.yielded_before.append(self.yielded)
        return emt_evaluate(batch)


def structures() -> dict[str, Atoms]:
    """Eight small structures away from equilibrium, of various symmetries."""
    rng = np.random.default_rng(7)
    s: dict[str, Atoms] = {}
    s["cu_fcc_expanded"] = bulk("Cu", "fcc", a=3.70, cubic=True)
    s["al_fcc_compressed"] = bulk("Al", "fcc", a=3.80)
    ni = bulk("Ni", "fcc", a=3.60, cubic=True)
    ni.positions += rng.normal(0.0, 0.03, ni.positions.shape)
    s["ni_rattled"] = ni
    pd = bulk("Pd", "fcc", a=3.95)
    shear = np.eye(3) + np.array([[0.02, 0.01, 0.0], [0.01, -0.01, 0.0], [0.0, 0.0, 0.0]])
    pd.set_cell(pd.cell[:] @ shear, scale_atoms=True)
    s["pd_strained"] = pd
    s["cu_bcc"] = bulk("Cu", "bcc", a=2.95)
    a = 3.85
    s["cu3au_l12"] = Atoms(
        "AuCu3",
        scaled_positions=[(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
        cell=[a, a, a],
        pbc=True,
    )
    s["ag_hcp_strained"] = bulk("Ag", "hcp", a=2.95, c=4.70)
    pt = bulk("Pt", "fcc", a=3.90, cubic=True) * (2, 1, 1)
    pt.positions += rng.normal(0.0, 0.04, pt.positions.shape)
    s["pt_rattled"] = pt
    return s


@dataclass(frozen=True)
class Reference:
    atoms: Atoms
    converged: bool
    steps: int
    energy: float
    forces: np.ndarray
    stress: np.ndarray


def ase_alone(atoms: Atoms, settings: RelaxSettings) -> Reference:
    """ASE's own recipe on one structure, no batching."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    if settings.fix_symmetry:
        atoms.set_constraint(FixSymmetry(atoms, symprec=settings.symprec))
    optimizer = FIRE(FrechetCellFilter(atoms) if settings.relax_cell else atoms, logfile=None)
    converged = optimizer.run(fmax=settings.fmax, steps=settings.max_steps)
    return Reference(
        atoms=atoms,
        converged=bool(converged),
        steps=optimizer.nsteps,
        energy=atoms.get_potential_energy(),
        forces=atoms.get_forces(apply_constraint=False),
        stress=atoms.get_stress(apply_constraint=False),
    )


def assert_same(result: RelaxResult, ref: Reference, name: str) -> None:
    assert result.error is None, name
    assert result.converged == ref.converged, name
    assert result.steps == ref.steps, name
    assert result.atoms.calc is None and not result.atoms.constraints, name
    np.testing.assert_allclose(result.atoms.cell[:], ref.atoms.cell[:], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.atoms.positions, ref.atoms.positions, rtol=0, atol=1e-10)
    assert result.energy == pytest.approx(ref.energy, rel=0, abs=1e-10), name
    np.testing.assert_allclose(result.forces, ref.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.stress, ref.stress, rtol=0, atol=1e-12)


def relax_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("umlip-relax")]


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    return {name: ase_alone(atoms, SETTINGS) for name, atoms in structures().items()}


def test_lockstep_matches_ase_alone_and_batches(references: dict[str, Reference]) -> None:
    jobs = structures()
    originals = {name: atoms.copy() for name, atoms in jobs.items()}
    evaluator = RecordingEvaluator()
    stats = LockstepStats()
    max_active = 3
    results: dict[str, RelaxResult] = {}
    for name, result in relax_in_lockstep(
        jobs.items(), evaluator, SETTINGS, max_active=max_active, stats=stats
    ):
        results[name] = result
        evaluator.yielded += 1

    assert set(results) == set(jobs)
    for name, ref in references.items():
        assert ref.converged and ref.steps >= 5, name  # the test relaxes something
        assert_same(results[name], ref, name)
    for name, atoms in jobs.items():  # the caller's structures are untouched
        np.testing.assert_array_equal(atoms.positions, originals[name].positions)
        np.testing.assert_array_equal(atoms.cell[:], originals[name].cell[:])

    # (2) one call per lockstep step of every live structure; the batch stays full.
    total_evaluations = sum(ref.steps + 1 for ref in references.values())
    assert stats.evaluate_calls == len(evaluator.batch_sizes)
    assert stats.structures_evaluated == total_evaluations
    assert stats.evaluate_calls < total_evaluations / 2
    assert stats.largest_batch == max_active
    assert stats.mean_batch_size == pytest.approx(total_evaluations / stats.evaluate_calls)
    for size, done in zip(evaluator.batch_sizes, evaluator.yielded_before, strict=True):
        assert size == min(max_active, len(jobs) - done)


def test_without_fix_symmetry_matches_ase_alone() -> None:
    settings = RelaxSettings(fmax=0.02, max_steps=300, fix_symmetry=False)
    jobs = {
        k: v for k, v in structures().items() if k in ("ni_rattled", "al_fcc_compressed", "cu_bcc")
    }
    results = dict(relax_in_lockstep(jobs.items(), emt_evaluate, settings, max_active=2))
    for name, atoms in jobs.items():
        assert_same(results[name], ase_alone(atoms, settings), name)


def test_fixed_cell_keeps_cell_and_relaxes_positions() -> None:
    rng = np.random.default_rng(3)
    atoms = bulk("Cu", "fcc", a=3.63, cubic=True) * (2, 1, 1)
    atoms.set_cell(
        atoms.cell[:] @ (np.eye(3) + np.array([[0.01, 0.02, 0], [0.02, 0, 0], [0, 0, -0.01]])),
        scale_atoms=True,
    )
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    cell = atoms.cell[:].copy()
    start_fmax = np.linalg.norm(emt_evaluate([atoms])[0].forces, axis=1).max()  # type: ignore[union-attr]

    for fix_symmetry in (True, False):
        settings = RelaxSettings(fmax=0.01, relax_cell=False, fix_symmetry=fix_symmetry)
        [(key, result)] = relax_in_lockstep([("cu", atoms)], emt_evaluate, settings)
        assert key == "cu" and result.error is None and result.converged
        np.testing.assert_array_equal(result.atoms.cell[:], cell)
        assert start_fmax > 0.3
        assert np.linalg.norm(result.forces, axis=1).max() < settings.fmax
        assert np.abs(result.stress).max() > 1e-3  # a strained cell keeps its stress
    assert_same(result, ase_alone(atoms, settings), "fixed cell")


def test_unsupported_element_fails_alone() -> None:
    jobs = [
        ("cu", bulk("Cu", "fcc", a=3.7)),
        ("xe", bulk("Xe", "fcc", a=6.2)),
        ("al", bulk("Al", "fcc", a=4.2)),
        (
            "cuxe",
            Atoms("CuXe", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5)], cell=[3.5] * 3, pbc=True),
        ),
    ]
    results = dict(relax_in_lockstep(jobs, emt_evaluate, RelaxSettings(), max_active=4))
    for name in ("xe", "cuxe"):
        failed = results[name]
        assert failed.error is not None and failed.error.startswith("UNSUPPORTED_ELEMENT")
        assert not failed.converged and failed.steps == 0
        assert np.isnan(failed.energy) and np.isnan(failed.forces).all()
        assert np.isnan(failed.stress).all() and failed.forces.shape == (len(failed.atoms), 3)
    for name in ("cu", "al"):
        assert results[name].error is None and results[name].converged


def test_optimizer_exception_fails_only_that_structure() -> None:
    def evaluate(batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        out = emt_evaluate(batch)
        for i, atoms in enumerate(batch):
            if atoms.get_chemical_symbols() == ["Al"]:  # malformed answer for Al
                good = out[i]
                assert isinstance(good, Evaluation)
                out[i] = Evaluation(good.energy, good.forces[:, :2], good.stress)
        return out

    jobs = [("cu", bulk("Cu", "fcc", a=3.7)), ("al", bulk("Al", "fcc", a=4.2))]
    results = dict(relax_in_lockstep(jobs, evaluate, RelaxSettings()))
    assert results["al"].error is not None and "ValueError" in results["al"].error
    assert results["cu"].error is None and results["cu"].converged
    assert not relax_threads()


def test_non_convergence_is_a_flag() -> None:
    settings = RelaxSettings(max_steps=2)
    atoms = structures()["pt_rattled"]
    [(_, result)] = relax_in_lockstep([(0, atoms)], emt_evaluate, settings)
    assert result.error is None and not result.converged and result.steps == 2
    assert np.isfinite(result.energy)
    assert_same(result, ase_alone(atoms, settings), "max_steps=2")


def test_evaluator_exception_propagates_and_stops_threads() -> None:
    before = threading.active_count()
    calls = 0

    def flaky(batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise ConnectionError("service unavailable")
        return emt_evaluate(batch)

    with pytest.raises(ConnectionError, match="service unavailable"):
        for _ in relax_in_lockstep(structures().items(), flaky, SETTINGS, max_active=4):
            pass
    assert not relax_threads()
    assert threading.active_count() == before


def test_wrong_number_of_results_raises() -> None:
    with pytest.raises(ValueError, match="results for"):
        list(relax_in_lockstep(structures().items(), lambda b: emt_evaluate(b)[1:], SETTINGS))
    assert not relax_threads()


def test_closing_the_generator_stops_threads() -> None:
    before = threading.active_count()
    generator = relax_in_lockstep(structures().items(), emt_evaluate, SETTINGS, max_active=4)
    _, result = next(generator)
    assert result.error is None
    assert len(relax_threads()) == 3  # the others are still relaxing
    generator.close()
    assert not relax_threads()
    assert threading.active_count() == before


def test_empty_jobs_and_bad_arguments() -> None:
    assert list(relax_in_lockstep([], emt_evaluate, SETTINGS)) == []
    with pytest.raises(ValueError, match="max_active"):
        relax_in_lockstep([], emt_evaluate, SETTINGS, max_active=0)
    with pytest.raises(ValueError, match="fmax"):
        RelaxSettings(fmax=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        RelaxSettings(max_steps=-1)
    with pytest.raises(TypeError, match="relax_cell"):
        RelaxSettings(relax_cell=1)  # type: ignore[arg-type]
