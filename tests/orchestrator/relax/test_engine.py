"""The vectorized engine follows ASE step by step: positions, cell, energy, step counts.

The reference is today's path, :func:`relax_in_lockstep` (ASE's own ``FIRE``,
``FrechetCellFilter`` and ``FixSymmetry`` per structure), on the same EMT evaluator.
Every structure sent to the evaluator is recorded under its job name (``info["job"]``),
so each trajectory is compared evaluation by evaluation.

Agreement is to rounding, not bit for bit (measured: about 1e-14 Å and eV), because
the engine does the same algebra in another order: sums over a structure's atoms are
segment sums instead of ``np.vdot``, FixSymmetry's averages are precomputed sparse
matrices instead of a loop over operations, inverses replace ``pinv``/``solve``,
``expm`` and its Frechet derivative are a batched Taylor series instead of scipy's
Pade approximants, and the log of the deformation gradient is carried from step to step
instead of being recomputed by ``scipy.linalg.logm`` from the cell (ASE's round trip
``logm(expm(X))``). The tests allow 1e-9 (Å, eV), far above rounding and far below any
difference in the algorithm.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.linalg
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixSymmetry

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax import LockstepStats, RelaxResult, RelaxSettings, relax_in_lockstep
from umlip_orchestrator.relax import tensors as engine_tensors
from umlip_orchestrator.relax.engine import _Batch
from umlip_orchestrator.relax.pipeline import relax_vectorized
from umlip_orchestrator.relax.structures import Structure
from umlip_orchestrator.relax.tensors import expm, expm_frechet

EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})
TOL = 1e-9

State = tuple[np.ndarray, np.ndarray, float]


@dataclass
class Recorder:
    """EMT evaluator recording each job's evaluated states and each batch's size.

    ``fail_at`` fails a job (in-band) at its n-th evaluation (0-based); ``malformed``
    returns forces of the wrong shape for a job at its n-th evaluation.
    """

    fail_at: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    states: dict[str, list[State]] = field(default_factory=lambda: defaultdict(list))
    batch_sizes: list[int] = field(default_factory=list)
    yielded_before: list[int] = field(default_factory=list)
    yielded: int = 0

    def __call__(self, batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        self.batch_sizes.append(len(batch))
        self.yielded_before.append(self.yielded)
        out: list[Evaluation | StructureFailed] = []
        for atoms in batch:
            job = atoms.info.get("job", "")
            index = len(self.states[job])
            self.states[job].append((atoms.positions.copy(), atoms.cell[:].copy(), np.nan))
            unsupported = set(atoms.get_chemical_symbols()) - EMT_ELEMENTS
            if unsupported or self.fail_at.get(job) == index:
                out.append(StructureFailed("UNSUPPORTED_ELEMENT", f"no EMT for {job}"))
                continue
            copy = atoms.copy()
            copy.calc = EMT()
            energy = copy.get_potential_energy()
            forces = copy.get_forces()
            if self.malformed.get(job) == index:
                forces = forces[:, :2]
            self.states[job][-1] = (atoms.positions.copy(), atoms.cell[:].copy(), energy)
            out.append(Evaluation(energy=energy, forces=forces, stress=copy.get_stress()))
        return out


def tagged(name: str, atoms: Atoms) -> tuple[str, Atoms]:
    atoms = atoms.copy()
    atoms.info["job"] = name
    return name, atoms


def strained(atoms: Atoms, strain: list[list[float]]) -> Atoms:
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.array(strain)), scale_atoms=True)
    return atoms


def rattled(atoms: Atoms, sigma: float, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(0.0, sigma, atoms.positions.shape)
    return atoms


def low_symmetry_cases() -> list[tuple[str, Atoms]]:
    """Rattled fcc Cu, Al, Ni, strained cells and a triclinic cell (no symmetry to keep)."""
    triclinic = Atoms(
        "Cu2",
        scaled_positions=[(0.02, 0.01, 0.0), (0.47, 0.53, 0.51)],
        cell=[[2.60, 0.10, 0.05], [0.30, 2.75, -0.12], [0.20, 0.25, 2.70]],
        pbc=True,
    )
    return [
        tagged("cu_rattled", rattled(bulk("Cu", "fcc", a=3.66, cubic=True), 0.06, 1)),
        tagged("al_rattled", rattled(bulk("Al", "fcc", a=4.00, cubic=True), 0.08, 2)),
        tagged("ni_rattled", rattled(bulk("Ni", "fcc", a=3.48, cubic=True), 0.05, 3)),
        tagged(
            "cu_strained",
            strained(
                bulk("Cu", "fcc", a=3.62), [[0.04, 0.02, 0], [0.02, -0.03, 0.01], [0, 0.01, 0]]
            ),
        ),
        tagged(
            "al_strained_rattled",
            rattled(
                strained(
                    bulk("Al", "fcc", a=4.05) * (2, 1, 1),
                    [[-0.03, 0, 0.02], [0, 0.05, 0], [0.02, 0, 0]],
                ),
                0.03,
                4,
            ),
        ),
        tagged("cu_triclinic", triclinic),
    ]


def symmetric_cases() -> list[tuple[str, Atoms]]:
    """Symmetric cells away from equilibrium, for FixSymmetry."""
    a = 3.55
    cu3au = Atoms(
        "AuCu3",
        scaled_positions=[(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
        cell=[a, a, a],
        pbc=True,
    )
    pt = bulk("Pt", "fcc", a=3.90, cubic=True) * (2, 1, 1)
    pt.positions[0, 0] += 0.15  # a free internal coordinate (tetragonal subgroup)
    return [
        tagged("cu3au_l12", cu3au),
        tagged("ag_hcp", bulk("Ag", "hcp", a=2.95, c=4.70)),
        tagged(
            "ni_tetragonal",
            strained(bulk("Ni", "fcc", a=3.55, cubic=True), [[0, 0, 0], [0, 0, 0], [0, 0, 0.04]]),
        ),
        tagged("cu_near_symmetric", rattled(bulk("Cu", "fcc", a=3.70, cubic=True), 0.002, 5)),
        tagged("pt_displaced", pt),
        tagged(
            "al_sheared",
            strained(bulk("Al", "fcc", a=4.0), [[0.0, 0.03, 0.0], [0.03, 0.0, 0.0], [0, 0, 0]]),
        ),
    ]


@dataclass
class Run:
    results: dict[str, RelaxResult]
    recorder: Recorder
    stats: LockstepStats


def run(relax, jobs: list[tuple[str, Atoms]], settings: RelaxSettings, **kwargs) -> Run:  # type: ignore[no-untyped-def]
    recorder = Recorder(**kwargs.pop("recorder", {}))
    stats = LockstepStats()
    results: dict[str, RelaxResult] = {}
    for key, result in relax(jobs, recorder, settings, stats=stats, **kwargs):
        assert key not in results
        results[key] = result
        recorder.yielded += 1
    return Run(results, recorder, stats)


def max_deviation(ref: list[State], new: list[State]) -> tuple[float, float, float]:
    """Largest |Δ| over a trajectory of positions (Å), cell (Å) and energy (eV)."""
    assert len(ref) == len(new)
    dpos = max(float(np.abs(r[0] - n[0]).max()) for r, n in zip(ref, new, strict=True))
    dcell = max(float(np.abs(r[1] - n[1]).max()) for r, n in zip(ref, new, strict=True))
    energies = [(r[2], n[2]) for r, n in zip(ref, new, strict=True)]
    assert all(np.isnan(r) == np.isnan(n) for r, n in energies)
    denergy = max((abs(r - n) for r, n in energies if not np.isnan(r)), default=0.0)
    return dpos, dcell, denergy


def assert_follows_ase(ref: Run, new: Run, min_steps: int = 8) -> dict[str, tuple[float, ...]]:
    """Every trajectory and result of ``new`` equals ``ref``'s to TOL; returns deviations."""
    assert set(new.results) == set(ref.results)
    deviations = {}
    for name, expected in ref.results.items():
        got = new.results[name]
        assert got.error == expected.error, name
        assert got.converged == expected.converged, name
        assert got.steps == expected.steps, name
        if expected.error is None:
            assert expected.steps >= min_steps, name  # the case relaxes something
            assert len(ref.recorder.states[name]) == expected.steps + 1, name
        deviations[name] = dev = max_deviation(ref.recorder.states[name], new.recorder.states[name])
        assert max(dev) < TOL, (name, dev)
        assert got.atoms.calc is None and not got.atoms.constraints, name
        assert got.atoms.info["job"] == name
        np.testing.assert_allclose(got.atoms.positions, expected.atoms.positions, rtol=0, atol=TOL)
        np.testing.assert_allclose(got.atoms.cell[:], expected.atoms.cell[:], rtol=0, atol=TOL)
        np.testing.assert_allclose(got.energy, expected.energy, rtol=0, atol=TOL)
        np.testing.assert_allclose(got.forces, expected.forces, rtol=0, atol=TOL)
        np.testing.assert_allclose(got.stress, expected.stress, rtol=0, atol=TOL)
    return deviations


@pytest.mark.parametrize(
    ("relax_cell", "fix_symmetry"),
    [(True, False), (True, True), (False, False), (False, True)],
    ids=["cell-nosym", "cell-sym", "fixed-nosym", "fixed-sym"],
)
def test_engine_follows_ase_step_by_step(relax_cell: bool, fix_symmetry: bool) -> None:
    settings = RelaxSettings(
        fmax=0.01, max_steps=300, relax_cell=relax_cell, fix_symmetry=fix_symmetry
    )
    jobs = symmetric_cases() if fix_symmetry else low_symmetry_cases()
    if not relax_cell:  # at fixed cell only the rattled/displaced ones relax
        jobs = [
            job for job in jobs if "rattled" in job[0] or job[0] in ("pt_displaced", "cu_triclinic")
        ]
    originals = [(name, atoms.copy()) for name, atoms in jobs]
    ref = run(relax_in_lockstep, jobs, settings, max_active=len(jobs))
    new = run(relax_vectorized, jobs, settings, max_active=len(jobs))
    deviations = assert_follows_ase(ref, new)
    assert all(r.converged for r in new.results.values())
    print(f"\n{relax_cell=} {fix_symmetry=}: max |Δ| (positions Å, cell Å, energy eV)")
    for name, dev in deviations.items():
        print(
            f"  {name:22s} steps {new.results[name].steps:4d}  "
            + "  ".join(f"{d:.1e}" for d in dev)
        )
    for (name, atoms), (_, original) in zip(jobs, originals, strict=True):  # untouched
        np.testing.assert_array_equal(atoms.positions, original.positions, err_msg=name)
        np.testing.assert_array_equal(atoms.cell[:], original.cell[:], err_msg=name)
    if not relax_cell:
        for name, atoms in jobs:
            np.testing.assert_array_equal(new.results[name].atoms.cell[:], atoms.cell[:])
    if fix_symmetry and relax_cell:  # the symmetry is kept: same space group at the end
        from ase.spacegroup.symmetrize import check_symmetry

        for name, atoms in jobs:
            start = atoms.copy()
            FixSymmetry(start, symprec=settings.symprec)  # refines start, as ASE does
            end = check_symmetry(new.results[name].atoms, 1e-6)
            assert end.number == check_symmetry(start, 1e-6).number, name


def test_log_recomputed_from_the_cell_follows_ase(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's literal-ASE branch: ``logm`` of the (FixSymmetry-adjusted) cell.

    The engine carries log F from step to step and recomputes it with ``scipy.linalg.logm``
    only where FixSymmetry changed the cell; forcing the recomputation at every step must
    give the same trajectories.
    """
    from umlip_orchestrator.relax import engine

    monkeypatch.setattr(engine, "_LOGM_REFRESH", -1.0)
    calls = 0
    logm = scipy.linalg.logm

    def counting_logm(matrix: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        return logm(matrix)

    settings = RelaxSettings(fmax=0.01, max_steps=300)
    jobs = [job for job in symmetric_cases() if job[0] in ("ag_hcp", "pt_displaced")]
    ref = run(relax_in_lockstep, jobs, settings, max_active=2)
    monkeypatch.setattr(engine.scipy.linalg, "logm", counting_logm)
    new = run(relax_vectorized, jobs, settings, max_active=2)
    assert calls == sum(r.steps for r in new.results.values())
    assert_follows_ase(ref, new)


def test_refill_batches_and_step_limit() -> None:
    """Batches stay full, finished structures make room, max_steps is a flag."""
    settings = RelaxSettings(fmax=0.01, max_steps=300, fix_symmetry=False)
    jobs = low_symmetry_cases()
    max_active = 3
    ref = run(relax_in_lockstep, jobs, settings, max_active=max_active)
    new = run(relax_vectorized, jobs, settings, max_active=max_active)
    assert_follows_ase(ref, new)
    recorder = new.recorder
    assert recorder.batch_sizes == ref.recorder.batch_sizes
    for size, done in zip(recorder.batch_sizes, recorder.yielded_before, strict=True):
        assert size == min(max_active, len(jobs) - done)
    total = sum(r.steps + 1 for r in new.results.values())
    assert new.stats.structures_evaluated == total
    assert new.stats.evaluate_calls == len(recorder.batch_sizes) < total / 2
    assert new.stats.largest_batch == max_active

    short = RelaxSettings(fmax=0.01, max_steps=3, fix_symmetry=False)
    ref = run(relax_in_lockstep, jobs[:2], short)
    new = run(relax_vectorized, jobs[:2], short)
    assert_follows_ase(ref, new, min_steps=3)
    assert all(not r.converged and r.steps == 3 and r.ok for r in new.results.values())


def test_jobs_are_read_lazily() -> None:
    pulled = 0

    def jobs() -> Iterator[tuple[str, Atoms]]:
        nonlocal pulled
        for job in low_symmetry_cases():
            pulled += 1
            yield job

    generator = relax_vectorized(
        jobs(), Recorder(), RelaxSettings(fix_symmetry=False), max_active=2
    )
    assert pulled == 0
    next(generator)
    assert pulled == 2  # the first two; a place frees up when the first result is taken
    next(generator)
    assert pulled == 3
    generator.close()


def test_failures_are_results_like_lockstep() -> None:
    """In-band failures at the start and mid-way, and a malformed answer, fail alone."""
    settings = RelaxSettings(fmax=0.01, max_steps=300)
    cases = symmetric_cases()[:3]
    jobs = [
        *cases,
        tagged("xe", bulk("Xe", "fcc", a=6.2)),
        tagged(
            "cuxe",
            Atoms("CuXe", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5)], cell=[3.5] * 3, pbc=True),
        ),
    ]
    failing = {"fail_at": {"ag_hcp": 4}, "malformed": {"ni_tetragonal": 6}}
    ref = run(relax_in_lockstep, jobs, settings, max_active=2, recorder=failing)
    new = run(relax_vectorized, jobs, settings, max_active=2, recorder=failing)
    assert_follows_ase(ref, new, min_steps=0)
    assert new.recorder.batch_sizes == ref.recorder.batch_sizes
    results = new.results
    for name in ("xe", "cuxe"):
        failed = results[name]
        assert failed.error is not None and failed.error.startswith("UNSUPPORTED_ELEMENT")
        assert not failed.converged and failed.steps == 0 and np.isnan(failed.energy)
        assert np.isnan(failed.forces).all() and failed.forces.shape == (len(failed.atoms), 3)
        assert np.isnan(failed.stress).all()
    mid = results["ag_hcp"]  # failed at its 5th evaluation: the 4th is its last state
    assert mid.error is not None and mid.error.startswith("UNSUPPORTED_ELEMENT")
    assert mid.steps == 4 and np.isfinite(mid.energy)
    np.testing.assert_array_equal(mid.atoms.positions, new.recorder.states["ag_hcp"][3][0])
    bad = results["ni_tetragonal"]
    assert bad.error is not None and bad.error.startswith("ValueError: forces have shape")
    assert bad.steps == 6
    assert results["cu3au_l12"].ok and results["cu3au_l12"].converged


def test_evaluator_errors_propagate() -> None:
    calls = 0

    def flaky(batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionError("service unavailable")
        return Recorder()(batch)

    with pytest.raises(ConnectionError, match="service unavailable"):
        list(relax_vectorized(low_symmetry_cases(), flaky, RelaxSettings(fix_symmetry=False)))
    with pytest.raises(ValueError, match="results for"):
        list(
            relax_vectorized(
                low_symmetry_cases(), lambda b: Recorder()(b)[1:], RelaxSettings(fix_symmetry=False)
            )
        )


def test_empty_jobs_and_bad_arguments() -> None:
    assert list(relax_vectorized([], Recorder(), RelaxSettings())) == []
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="max_active"):
            relax_vectorized([], Recorder(), RelaxSettings(), max_active=bad)  # type: ignore[arg-type]
    [(_, empty)] = relax_vectorized(
        [("e", Atoms(cell=[3, 3, 3], pbc=True))], Recorder(), RelaxSettings()
    )
    assert empty.error is not None and "no atoms" in empty.error


def test_expm_and_frechet_match_scipy() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(size=(40, 3, 3)) * np.repeat([0.01, 0.1, 0.5, 2.0], 10)[:, None, None]
    e = rng.normal(size=(40, 3, 3))
    got, frechet = expm(a), expm_frechet(a, e)
    for i in range(len(a)):
        expected = scipy.linalg.expm(a[i])
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            frechet[i],
            scipy.linalg.expm_frechet(a[i], e[i], compute_expm=False),
            rtol=1e-12,
            atol=1e-13 * np.abs(expected).max(),
        )


def test_symmetry_projections_match_fix_symmetry() -> None:
    """The precomputed projections give FixSymmetry's adjust_forces and adjust_stress."""
    from ase.spacegroup.symmetrize import symmetrize_rank1, symmetrize_rank2

    rng = np.random.default_rng(5)
    settings = RelaxSettings()
    batch = _Batch(settings)
    cases = [atoms for _, atoms in symmetric_cases()]
    for atoms in cases:
        batch.add(Structure.start(None, atoms, settings))
    batch.snapshots()
    forces = rng.normal(size=(len(batch.positions), 3))
    tensors = rng.normal(size=(len(cases), 3, 3))
    inverse = np.linalg.inv(batch.cell)
    got_forces = batch._symmetrize_rank1(forces, batch.cell, inverse)
    got_tensors = engine_tensors.symmetrize_rank2(batch.cell, inverse, tensors, batch.rank2)
    for b, atoms in enumerate(cases):
        refined = atoms.copy()
        constraint = FixSymmetry(refined, symprec=settings.symprec)
        np.testing.assert_allclose(
            refined.positions, batch.positions[batch.offsets[b] : batch.offsets[b + 1]], atol=1e-14
        )
        np.testing.assert_allclose(refined.cell[:], batch.cell[b], atol=1e-14)
        lattice, inv_lattice = refined.get_cell(), refined.cell.reciprocal().T
        part = slice(batch.offsets[b], batch.offsets[b + 1])
        expected = symmetrize_rank1(
            lattice,
            inv_lattice,
            forces[part],
            constraint.rotations,
            constraint.translations,
            constraint.symm_map,
        )
        np.testing.assert_allclose(got_forces[part], expected, rtol=0, atol=1e-13)
        assert np.abs(expected - forces[part]).max() > 0.1  # the projection does something
        expected2 = symmetrize_rank2(lattice, inv_lattice, tensors[b], constraint.rotations)
        np.testing.assert_allclose(got_tensors[b], expected2, rtol=0, atol=1e-13)


def test_snapshot_is_a_plain_independent_copy() -> None:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_tags([1, 2, 3, 4])
    atoms.set_initial_magnetic_moments([0.1, 0.2, 0.3, 0.4])
    atoms.info["material_id"] = "mp-30"
    structure = Structure.start("cu", atoms, RelaxSettings(fix_symmetry=False))
    positions = atoms.positions + 0.01
    cell = atoms.cell[:] * 1.01
    snapshot = structure.snapshot(positions, cell)
    reference = atoms.copy()
    reference.positions = positions
    reference.cell = cell
    assert snapshot == reference  # numbers, positions, cell, pbc
    assert snapshot.info == reference.info and snapshot.info is not structure.template.info
    np.testing.assert_array_equal(snapshot.get_tags(), [1, 2, 3, 4])
    np.testing.assert_array_equal(snapshot.get_initial_magnetic_moments(), [0.1, 0.2, 0.3, 0.4])
    assert snapshot.calc is None and not snapshot.constraints
    snapshot.numbers[0] = 29 + 50
    snapshot.cell[0, 0] = 99.0
    snapshot.pbc[0] = False
    assert structure.template.numbers[0] == 29 and structure.template.cell[0, 0] == 3.6
    assert structure.template.pbc.all()
    assert snapshot.get_volume() > 0 and len(snapshot.copy()) == 4
