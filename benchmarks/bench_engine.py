"""Benchmark: orchestrator CPU time per structure-step, vectorized engine vs ASE threads.

Relaxes structures of 2-30 atoms (fcc, bcc, hcp and L1_2 supercells, some rattled and
strained, some left symmetric) with ``relax_vectorized`` and with today's
``relax_in_lockstep`` (ASE's FIRE + FrechetCellFilter + FixSymmetry, one thread per
structure) at 16, 64 and 256 active structures. The potential is a cheap harmonic model
(forces pull atoms to their ideal sites in the current cell, stress is proportional to
the strain), and its CPU time is measured around every call and subtracted from the
process's CPU time, so only the orchestrator's own work is counted. Every job runs
exactly ``--steps`` FIRE steps (fmax is unreachable), ``jobs = active``, so the batch
stays full.

Printed per mode and batch size: CPU ms per structure-step in total (symmetry setup
included, amortized over ``--steps``), the setup CPU per structure (spglib refinement
and operations), the step part alone, and the ratio ASE / engine.

    uv run python benchmarks/bench_engine.py                    # both, 16/64/256 active
    uv run python benchmarks/bench_engine.py --skip-ase --sizes 256 --steps 100
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixSymmetry

from umlip_orchestrator.evaluation import Evaluation, StructureFailed
from umlip_orchestrator.relax import LockstepStats, RelaxSettings, lockstep, relax_in_lockstep
from umlip_orchestrator.relax.pipeline import relax_vectorized
from umlip_orchestrator.relax.structures import Structure

#: GOAL of issue 11: at most this many ms of orchestrator CPU per structure-step at 256.
GOAL_MS = 0.2


def structures(count: int, seed: int) -> list[Atoms]:
    """``count`` cells of 2-30 atoms: expanded symmetric, strained, strained and rattled."""
    rng = np.random.default_rng(seed)
    a = 3.6
    l12 = Atoms(
        "AuCu3",
        scaled_positions=[(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)],
        cell=[a, a, a],
        pbc=True,
    )
    bases = [
        bulk("Cu", "fcc", a=a),
        bulk("Cu", "fcc", a=a, cubic=True),
        bulk("Al", "bcc", a=3.2),
        bulk("Ag", "hcp", a=2.9, c=4.7),
        l12,
    ]
    repeats = [(i, j, k) for i in range(1, 5) for j in range(1, 4) for k in range(1, 4)]
    out: list[Atoms] = []
    while len(out) < count:
        base = bases[rng.integers(len(bases))]
        reps = repeats[rng.integers(len(repeats))]
        if not 2 <= len(base) * np.prod(reps) <= 30:
            continue
        atoms = base * reps
        atoms.info["ideal_scaled"] = atoms.get_scaled_positions()
        atoms.info["ideal_cell"] = atoms.cell[:].copy()
        kind = len(out) % 3
        if kind == 0:  # symmetric, expanded: only the cell relaxes
            atoms.set_cell(atoms.cell[:] * 1.02, True)
        if kind >= 1:  # strained
            strain = rng.normal(0.0, 0.015, (3, 3))
            atoms.set_cell(atoms.cell[:] @ (np.eye(3) + (strain + strain.T) / 2), True)
        if kind == 2:  # rattled
            atoms.positions += rng.normal(0.0, 0.04, atoms.positions.shape)
        out.append(atoms)
    return out


@dataclass
class HarmonicModel:
    """A cheap potential; counts its own CPU time so the benchmark can subtract it."""

    spring: float = 1.0  # eV/Å^2
    modulus: float = 0.5  # eV/Å^3
    cpu_seconds: float = 0.0

    def __call__(self, batch: Sequence[Atoms]) -> list[Evaluation | StructureFailed]:
        start = time.process_time()
        out: list[Evaluation | StructureFailed] = []
        for atoms in batch:
            cell = atoms.cell[:]
            ideal = atoms.info["ideal_scaled"] @ cell
            displacement = atoms.positions - ideal
            displacement -= displacement.mean(axis=0)
            deform = np.linalg.solve(atoms.info["ideal_cell"], cell).T
            strain = (deform + deform.T) / 2 - np.eye(3)
            stress = self.modulus * strain
            energy = 0.5 * self.spring * float((displacement**2).sum())
            out.append(
                Evaluation(
                    energy=energy,
                    forces=-self.spring * displacement,
                    stress=np.array(
                        [
                            stress[0, 0],
                            stress[1, 1],
                            stress[2, 2],
                            stress[1, 2],
                            stress[0, 2],
                            stress[0, 1],
                        ]
                    ),
                )
            )
        self.cpu_seconds += time.process_time() - start
        return out


Relax = Callable[..., object]


class SetupClock:
    """Adds up the CPU time of each path's per-structure symmetry setup, in any thread.

    The engine's ``Structure.start`` and the ``FixSymmetry`` that ``relax_in_lockstep``
    builds in each worker are wrapped; ``time.thread_time`` counts only the thread that
    runs them, so concurrent worker threads do not inflate it.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> SetupClock:
        clock = self
        self._start = Structure.start.__func__  # type: ignore[attr-defined]
        self._fix = lockstep.FixSymmetry

        def start(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
            begin = time.thread_time()
            try:
                return clock._start(cls, *args, **kwargs)
            finally:
                clock.add(time.thread_time() - begin)

        class TimedFixSymmetry(FixSymmetry):
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                begin = time.thread_time()
                try:
                    super().__init__(*args, **kwargs)
                finally:
                    clock.add(time.thread_time() - begin)

        Structure.start = classmethod(start)  # type: ignore[method-assign,assignment]
        lockstep.FixSymmetry = TimedFixSymmetry  # type: ignore[misc]
        return self

    def __exit__(self, *exc: object) -> None:
        Structure.start = classmethod(self._start)  # type: ignore[method-assign,assignment]
        lockstep.FixSymmetry = self._fix  # type: ignore[misc]

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def measure(
    relax: Relax, jobs: list[Atoms], settings: RelaxSettings, active: int
) -> tuple[float, float, int, float]:
    """Runs one relaxation.

    Returns:
        (orchestrator CPU s, of which symmetry setup s, structure-steps, mean batch size).
    """
    model = HarmonicModel()
    stats = LockstepStats()
    steps = 0
    with warnings.catch_warnings(), SetupClock() as setup:
        warnings.simplefilter("ignore")
        start = time.process_time()
        for _, result in relax(enumerate(jobs), model, settings, max_active=active, stats=stats):  # type: ignore[attr-defined]
            assert result.error is None, result.error
            steps += result.steps
        total = time.process_time() - start - model.cpu_seconds
    return total, setup.seconds, steps, stats.mean_batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=30, help="FIRE steps per structure")
    parser.add_argument("--skip-ase", action="store_true", help="engine only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    modes = {
        "cell+sym": RelaxSettings(fmax=1e-9, max_steps=args.steps),
        "cell": RelaxSettings(fmax=1e-9, max_steps=args.steps, fix_symmetry=False),
        "fixed": RelaxSettings(
            fmax=1e-9, max_steps=args.steps, relax_cell=False, fix_symmetry=False
        ),
    }
    print(
        f"{'mode':>9} {'active':>6} {'path':>7} {'str-steps':>9} {'batch':>6} "
        f"{'total ms/ss':>11} {'setup ms/str':>12} {'step ms/ss':>10} {'ASE/engine':>10}"
    )
    for mode, settings in modes.items():
        for active in args.sizes:
            jobs = structures(active, args.seed)
            row: dict[str, tuple[float, float]] = {}
            paths: list[tuple[str, Relax]] = [("engine", relax_vectorized)]
            if not args.skip_ase and mode == "cell+sym":
                paths.append(("ase", relax_in_lockstep))
            for label, relax in paths:
                cpu, setup, steps, batch = measure(relax, jobs, settings, active)
                total_ms = 1e3 * cpu / steps
                step_ms = 1e3 * (cpu - setup) / steps
                row[label] = (total_ms, step_ms)
                ratio = ""
                if label == "ase":
                    ratio = f"{total_ms / row['engine'][0]:6.1f}x/{step_ms / row['engine'][1]:.1f}x"
                print(
                    f"{mode:>9} {active:>6} {label:>7} {steps:>9} {batch:>6.1f} {total_ms:>11.4f} "
                    f"{1e3 * setup / len(jobs):>12.3f} {step_ms:>10.4f} {ratio:>10}",
                    flush=True,
                )
    print(f"goal: step part <= {GOAL_MS} ms per structure-step at 256 active (engine)")


if __name__ == "__main__":
    main()
