"""Benchmark: the elastic workflow on 20 EMT crystals, lockstep batching vs one at a time.

Both sides go through the same real EMT service process and the same client; "one at
a time" relaxes and evaluates each structure alone (one structure per Calculate call),
"lockstep" relaxes all active structures together (one Calculate per optimiser step).

    uv run python benchmarks/bench_lockstep.py [--ion-mode relaxed|clamped]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.datasets import Material
from umlip_orchestrator.examples import emt_crystals
from umlip_orchestrator.workflow import WorkflowSettings, run_elastic_workflow
from umlip_wire.process import ServiceProcess

EMT_PYTHON = Path(__file__).resolve().parents[1] / "services" / "emt" / ".venv" / "bin" / "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ion-mode", choices=("relaxed", "clamped"), default="relaxed")
    args = parser.parse_args()
    materials = [
        Material(material_id=a.info["material_id"], formula=a.get_chemical_formula(), atoms=a)
        for a in emt_crystals()
    ]
    timings = {}
    with ServiceProcess(python=EMT_PYTHON, module="umlip_emt") as service:
        for label, max_active in (("lockstep", 64), ("one at a time", 1)):
            settings = WorkflowSettings(ion_mode=args.ion_mode, max_active=max_active)
            with PotentialClient(service.target) as client:
                start = time.perf_counter()
                if max_active > 1:
                    outcomes = run_elastic_workflow(materials, client.calculate, "emt", settings)
                else:
                    outcomes = [
                        o
                        for m in materials
                        for o in run_elastic_workflow([m], _one_by_one(client), "emt", settings)
                    ]
                timings[label] = time.perf_counter() - start
                ok = sum(o.result.status == "ok" for o in outcomes)
                print(
                    f"{label:>14}: {timings[label]:7.1f} s, {client.calls - 1:5d} Calculate calls, "
                    f"{ok}/{len(materials)} ok ({args.ion_mode} ions)"
                )
    print(f"speed-up of lockstep batching: {timings['one at a time'] / timings['lockstep']:.2f}x")


def _one_by_one(client: PotentialClient):  # type: ignore[no-untyped-def]
    """An evaluator sending each structure in its own Calculate call."""
    return lambda structures: [r for s in structures for r in client.calculate([s])]


if __name__ == "__main__":
    main()
