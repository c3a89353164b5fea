"""Accuracy of a potential service against the DFT labels of MPtrj frames.

Run from the dev workspace; the service runs in its own environment:

    uv run python benchmarks/accuracy_mptrj.py chgnet
    uv run python benchmarks/accuracy_mptrj.py sevennet --limit 200

Sends the frames of ``../shared/data/mptrj-random-1k.xyz`` (or ``--file``) through a
real server in calls of at most ``--call-atoms`` atoms and prints the mean absolute
errors: energy (eV/atom), forces (eV/Å, over all components), stress (GPa, over the six
Voigt components; ASE sign on both sides, the file already uses it).

The file's energies are VASP's raw totals. Models differ in what they were trained on:
CHGNet on MPtrj's MP2020-corrected energies, SevenNet-0 on the raw ones. So the energy
MAE is printed against both the raw labels and the labels plus each frame's MP2020
correction (pymatgen, GGA+U for O/F compounds of Co Cr Fe Mn Mo Ni V W, as the
Materials Project ran them); the smaller one is the model's reference.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read
from numpy.typing import NDArray

from umlip_serve.conformance import remote_calculate
from umlip_wire.batch import StructureError, StructureOutput, StructureResult
from umlip_wire.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
MPTRJ_RANDOM = REPO_ROOT.parent / "shared" / "data" / "mptrj-random-1k.xyz"
GPA_PER_EV_PER_A3 = 160.21766208
#: The Materials Project's U values (eV) for oxides and fluorides.
MP_HUBBARD_U = {
    "Co": 3.32,
    "Cr": 3.7,
    "Fe": 5.3,
    "Mn": 3.9,
    "Mo": 4.38,
    "Ni": 6.2,
    "V": 3.25,
    "W": 6.2,
}


def mp2020_correction(atoms: Atoms) -> float:
    """MP2020 energy correction of one DFT frame, eV (NaN if pymatgen rejects it)."""
    from pymatgen.entries.compatibility import (
        CompatibilityError,
        MaterialsProject2020Compatibility,
    )
    from pymatgen.entries.computed_entries import ComputedStructureEntry
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(atoms)
    symbols = {element.symbol for element in structure.composition.elements}
    plus_u = bool(symbols & {"O", "F"}) and bool(symbols & set(MP_HUBBARD_U))
    parameters = {
        "run_type": "GGA+U" if plus_u else "GGA",
        "is_hubbard": plus_u,
        "hubbards": {s: MP_HUBBARD_U.get(s, 0.0) if plus_u else 0.0 for s in symbols},
        "potcar_spec": [],
    }
    entry = ComputedStructureEntry(structure, atoms.get_potential_energy(), parameters=parameters)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adjustments = MaterialsProject2020Compatibility(check_potcar=False).get_adjustments(
                entry
            )
    except CompatibilityError:
        return float("nan")
    return float(sum(adjustment.value for adjustment in adjustments))


def calls(frames: Sequence[Atoms], max_atoms: int) -> list[list[int]]:
    """Consecutive frame indices grouped into calls of at most ``max_atoms`` atoms."""
    groups: list[list[int]] = []
    total = 0
    for index, atoms in enumerate(frames):
        if groups and total + len(atoms) <= max_atoms:
            groups[-1].append(index)
            total += len(atoms)
        else:
            groups.append([index])
            total = len(atoms)
    return groups


def evaluate(target: str, frames: Sequence[Atoms], max_atoms: int) -> list[StructureResult]:
    """Results for every frame, in order, with a progress line per call on stderr."""
    remote = remote_calculate(target, timeout_s=3600)
    results: list[StructureResult] = []
    started = time.perf_counter()
    for group in calls(frames, max_atoms):
        results.extend(remote([frames[i] for i in group]))
        elapsed = time.perf_counter() - started
        print(f"  {len(results)}/{len(frames)} frames, {elapsed:.0f} s", file=sys.stderr)
    return results


def report(frames: Sequence[Atoms], results: Sequence[StructureResult]) -> None:
    """Prints the MAEs over the frames the model computed."""
    done = [(a, r) for a, r in zip(frames, results, strict=True) if isinstance(r, StructureOutput)]
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, StructureError)]
    print(f"frames: {len(done)} computed, {len(failures)} failed")
    for index, error in failures[:10]:
        print(f"  frame {index}: {error.code.name}: {error.message}")
    if not done:
        return
    n_atoms = np.array([len(a) for a, _ in done])
    energy = np.array([r.energy for _, r in done])
    raw = np.array([a.get_potential_energy() for a, _ in done])
    corrected = raw + np.array([mp2020_correction(a) for a, _ in done])
    forces: NDArray[np.float64] = np.concatenate(
        [np.abs(r.forces - a.get_forces()) for a, r in done]
    )
    stress = np.array([r.stress for _, r in done])
    dft_stress = np.array([a.get_stress(voigt=True) for a, _ in done])
    print(
        f"energy MAE vs raw DFT:            {np.mean(np.abs(energy - raw) / n_atoms):.4f} eV/atom"
    )
    print(
        f"energy MAE vs MP2020-corrected:   {np.nanmean(np.abs(energy - corrected) / n_atoms):.4f}"
        f" eV/atom ({int(np.isnan(corrected).sum())} frames without a correction left out)"
    )
    print(f"force MAE:                        {forces.mean():.4f} eV/Å")
    stress_mae = np.abs(stress - dft_stress).mean() * GPA_PER_EV_PER_A3
    flipped = np.abs(stress + dft_stress).mean() * GPA_PER_EV_PER_A3
    print(f"stress MAE:                       {stress_mae:.4f} GPa (sign flipped: {flipped:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service name: services/<name>, module umlip_<name>")
    parser.add_argument("--python", type=Path, help="interpreter (default: the service's .venv)")
    parser.add_argument("--file", type=Path, default=MPTRJ_RANDOM, help="extended XYZ frames")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--call-atoms", type=int, default=1000, help="most atoms per call")
    args = parser.parse_args()
    python = args.python or REPO_ROOT / "services" / args.service / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run scripts/setup.sh {args.service}")
    frames = read(args.file, index=":")[: args.limit]
    print(f"{args.service}: {len(frames)} frames, {sum(len(a) for a in frames)} atoms")
    started = time.perf_counter()
    with ServiceProcess(
        python=python, module=f"umlip_{args.service}", start_timeout_s=600
    ) as service:
        results = evaluate(service.target, frames, args.call_atoms)
    print(f"wall time {time.perf_counter() - started:.0f} s (server start included)")
    report(frames, results)


if __name__ == "__main__":
    main()
