"""Benchmark: batched vs single calls of one potential service, through a real server.

Run from the dev workspace; the service runs in its own environment
(``services/<name>/.venv``, created by ``scripts/setup.sh <name>``):

    uv run python benchmarks/bench_models.py chgnet
    uv run python benchmarks/bench_models.py sevennet --repeat 20

Nothing model-specific is imported: the script starts ``python -m umlip_<name>`` with
the service's interpreter, asks ``GetModelInfo`` which elements it supports and picks an
8-atom test cell accordingly. It prints (a) milliseconds per energy+forces+stress call
for one 8-atom cell (median), and (b) the time of one call carrying 32 such cells
(rattled differently) against 32 sequential single calls, as a ratio (> 1: batching
pays). Timings on a shared machine vary by tens of percent: compare numbers from one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from ase import Atoms
from ase.build import bulk

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve.conformance import remote_calculate
from umlip_wire.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]

#: 8-atom cells by element, in order of preference (the first supported one is used).
CELLS: dict[int, Callable[[], Atoms]] = {
    14: lambda: bulk("Si", "diamond", a=5.43, cubic=True),
    29: lambda: bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 1, 1),
}


def model_info(target: str) -> pb.GetModelInfoResponse:
    """The service's self-description."""
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())


def bench_cells(supported: set[int], count: int) -> list[Atoms]:
    """``count`` rattled copies of the first 8-atom cell whose element is supported."""
    for number, build in CELLS.items():
        if number in supported:
            cells = []
            for seed in range(count):
                atoms = build()
                atoms.rattle(0.02, seed=seed)
                cells.append(atoms)
            return cells
    raise SystemExit(f"no benchmark cell among {sorted(CELLS)} is supported by the service")


def median_time(function: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls after one warm-up call, seconds."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service name: services/<name>, module umlip_<name>")
    parser.add_argument("--python", type=Path, help="interpreter (default: the service's .venv)")
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions")
    parser.add_argument("--batch", type=int, default=32, help="structures per batched call")
    args = parser.parse_args()
    python = args.python or REPO_ROOT / "services" / args.service / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run scripts/setup.sh {args.service}")
    started = time.perf_counter()
    with ServiceProcess(
        python=python, module=f"umlip_{args.service}", start_timeout_s=600
    ) as service:
        startup_s = time.perf_counter() - started
        info = model_info(service.target)
        remote = remote_calculate(service.target, timeout_s=600)
        cells = bench_cells(set(info.supported_atomic_numbers), args.batch)
        print(
            f"{info.model_name} {info.model_version}, checkpoint {info.checkpoint_name}, "
            f"{pb.Dtype.Name(info.dtype)}, device {info.device}; "
            f"server SERVING after {startup_s:.1f} s"
        )
        print(f"test cell: {cells[0].get_chemical_formula()} (8 atoms), energy+forces+stress")
        single_s = median_time(lambda: remote(cells[:1]), args.repeat)
        print(f"(a) one 8-atom cell: {single_s * 1e3:.1f} ms per call (median of {args.repeat})")
        rounds = max(1, args.repeat // 4)
        batched_s = median_time(lambda: remote(cells), rounds)
        singles_s = median_time(lambda: [remote([atoms]) for atoms in cells], rounds)
        print(
            f"(b) {args.batch} cells: one batched call {batched_s * 1e3:.0f} ms, "
            f"{args.batch} single calls {singles_s * 1e3:.0f} ms, "
            f"ratio singles/batched {singles_s / batched_s:.2f} (median of {rounds})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
