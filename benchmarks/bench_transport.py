"""Benchmark: gRPC overhead and dynamic batching of the EMT reference service.

Run in the EMT service's environment (it imports the adapter for the in-process side):

    services/emt/.venv/bin/python benchmarks/bench_transport.py

Prints (a) the time of one energy+forces+stress call through gRPC vs in-process, for
1 structure and for a batch of 64 structures of 8 atoms, as a ratio; (b) calls per
second under 8 concurrent clients with dynamic batching on vs off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ase import Atoms
from ase.build import bulk

from umlip_emt import EMTPotential
from umlip_serve import ALL_PROPERTIES, Settings, atoms_to_batch
from umlip_serve.conformance import remote_calculate
from umlip_wire.process import ServiceProcess

SERVICES = Path(__file__).resolve().parents[1] / "services"


def structures(count: int) -> list[Atoms]:
    """``count`` rattled 8-atom Cu/Ni/Pd/Al supercells."""
    result = []
    for k in range(count):
        atoms = bulk(["Cu", "Ni", "Pd", "Al"][k % 4], "fcc", a=3.7, cubic=True) * (2, 1, 1)
        atoms.rattle(0.02, seed=k)
        result.append(atoms)
    return result


def best_time(function: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, seconds."""
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead(repeat: int) -> None:
    potential = EMTPotential(Settings())
    potential.load()
    with ServiceProcess(python=sys.executable, module="umlip_emt") as service:
        remote = remote_calculate(service.target)
        print("(a) one call, energy+forces+stress, median of", repeat)
        for count in (1, 64):
            batch_atoms = structures(count)
            batch = atoms_to_batch(batch_atoms)
            local_s = best_time(lambda b=batch: potential.calculate(b, ALL_PROPERTIES), repeat)
            remote_s = best_time(lambda a=batch_atoms: remote(a), repeat)
            print(
                f"    {count:3d} x 8 atoms: in-process {local_s * 1e3:8.2f} ms, "
                f"gRPC {remote_s * 1e3:8.2f} ms, ratio gRPC/in-process {remote_s / local_s:5.2f}"
            )


def throughput(seconds: float, clients: int, python: str, module: str) -> None:
    print(
        f"(b) {module}: {clients} concurrent clients, 1 x 8-atom structure per call, "
        f"{seconds:.0f} s each"
    )
    rates = {}
    for label, enabled in (("on", "1"), ("off", "0")):
        env = {"UMLIP_DYNAMIC_BATCHING": enabled, "UMLIP_BATCH_WAIT_MS": "0"}
        with ServiceProcess(python=python, module=module, env=env) as service:
            remote = remote_calculate(service.target)
            payload = structures(1)
            counts = [0] * clients
            stop = threading.Event()

            def client(
                index: int, remote=remote, payload=payload, counts=counts, stop=stop
            ) -> None:
                while not stop.is_set():
                    remote(payload)
                    counts[index] += 1

            with ThreadPoolExecutor(max_workers=clients) as pool:
                for index in range(clients):
                    pool.submit(client, index)
                time.sleep(seconds)
                stop.set()
        rates[label] = sum(counts) / seconds
        print(f"    dynamic batching {label:3s}: {rates[label]:8.1f} calls/s")
    print(f"    ratio on/off: {rates['on'] / rates['off']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--throughput-service",
        default="emt",
        help="service of (b), e.g. chgnet: a batched model, run from services/<name>/.venv",
    )
    args = parser.parse_args()
    overhead(args.repeat)
    name = args.throughput_service
    python = sys.executable if name == "emt" else str(SERVICES / name / ".venv" / "bin" / "python")
    throughput(args.seconds, args.clients, python, f"umlip_{name}")


if __name__ == "__main__":
    main()
