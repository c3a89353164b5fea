"""Benchmark: the elastic workflow through a real service, vectorized engine vs ASE threads.

    uv run python benchmarks/bench_workflow_engine.py                 # CHGNet, 20 MP binaries
    uv run python benchmarks/bench_workflow_engine.py --model emt --ion-mode clamped

Both sides run ``run_elastic_workflow`` in this process on the same materials, through
the same service process and client, with the defaults (fmax 0.1, FixSymmetry, the
Materials Project strains, 64 structures per step); only the relaxer differs: the
vectorized engine (the workflow's default, ``relax_vectorized``) or ASE's own FIRE,
FrechetCellFilter and FixSymmetry in one thread per structure (``relax_in_lockstep``).
Prints each wall time, the ratio, the Calculate calls, and the largest |dK| and |dG|
between the two (they follow the same trajectories to rounding). The materials are
``random.seed(0); random.sample(data, N)`` of the bundled MP binary set (the sample of
issue 11), or EMT's own crystals with ``--model emt``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from umlip_orchestrator import workflow
from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.datasets import Material
from umlip_orchestrator.examples import emt_crystals
from umlip_orchestrator.relax import relax_in_lockstep, relax_vectorized
from umlip_serve.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
MP_BINARY = REPO_ROOT.parent / "shared" / "data" / "mp-binary-pbe-elasticity-2025.1.json.gz"


def materials(model: str, count: int) -> list[Material]:
    if model == "emt":
        return [
            Material(material_id=a.info["material_id"], formula=a.get_chemical_formula(), atoms=a)
            for a in emt_crystals()
        ][:count]
    with gzip.open(MP_BINARY, "rt") as handle:
        data = json.load(handle)
    random.seed(0)
    chosen = random.sample(data, count)
    return [
        Material(
            material_id=entry["mp_id"],
            formula=entry["formula"],
            atoms=AseAtomsAdaptor.get_atoms(Structure.from_dict(entry["structure"])),
        )
        for entry in chosen
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chgnet", help="a service under services/")
    parser.add_argument("--materials", type=int, default=20)
    parser.add_argument("--ion-mode", choices=("relaxed", "clamped"), default="relaxed")
    args = parser.parse_args()
    chosen = materials(args.model, args.materials)
    python = REPO_ROOT / "services" / args.model / ".venv" / "bin" / "python"
    settings = workflow.WorkflowSettings(ion_mode=args.ion_mode)
    results, timings = {}, {}
    with ServiceProcess(python=python, module=f"umlip_{args.model}", start_timeout_s=600) as s:
        client = PotentialClient(s.target)
        client.calculate([chosen[0].atoms])  # warm up
        for label, relaxer in (("engine", relax_vectorized), ("ASE threads", relax_in_lockstep)):
            workflow.relax_vectorized = relaxer  # the workflow's relaxer, for this arm only
            calls = client.calls
            start = time.perf_counter()
            outcomes = workflow.run_elastic_workflow(chosen, client.calculate, "m", settings)
            timings[label] = (time.perf_counter() - start, client.calls - calls)
            results[label] = {o.result.material_id: o.result for o in outcomes}
        workflow.relax_vectorized = relax_vectorized
    print(f"\n{args.model}, {len(chosen)} materials, {args.ion_mode} ions, defaults")
    for label, (seconds, calls) in timings.items():
        print(f"  {label:<12} {seconds:8.1f} s   {calls:5d} Calculate calls")
    print(f"  ASE threads / engine: {timings['ASE threads'][0] / timings['engine'][0]:.2f}x")
    dk = [abs((results["engine"][m].k_vrh_gpa or np.nan) - (r.k_vrh_gpa or np.nan))
          for m, r in results["ASE threads"].items()]  # fmt: skip
    dg = [abs((results["engine"][m].g_vrh_gpa or np.nan) - (r.g_vrh_gpa or np.nan))
          for m, r in results["ASE threads"].items()]  # fmt: skip
    print(f"  largest |dK| {np.nanmax(dk):.2e} GPa, |dG| {np.nanmax(dg):.2e} GPa "
          f"(ok rows: {sum(r.status == 'ok' for r in results['engine'].values())} engine, "
          f"{sum(r.status == 'ok' for r in results['ASE threads'].values())} ASE)")  # fmt: skip


if __name__ == "__main__":
    main()
