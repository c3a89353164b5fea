"""Soak: many concurrent clients against one real service, for minutes.

    uv run python benchmarks/soak.py [--seconds 300] [--clients 32] [--model emt|chgnet]

Each client (a thread with its own channel) loops good Calculate requests (small
crystals alone or in batches of up to 16) and checks every answer: one result per
structure, and energies equal to the reference (EMT: ASE's EMT in this process; CHGNet:
the first answer to the same request, within float32 noise). Every ``--every`` seconds
it prints requests/s, structures/s, errors by status code, p50/p99 latency and the
service's resident memory (VmRSS); at the end a summary. Exits 1 on a wrong answer or a
status other than OK and RESOURCE_EXHAUSTED ("server busy", which clients may retry).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

import grpc
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import service_python

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve import atoms_to_batch
from umlip_wire.codec import encode_batch
from umlip_wire.process import ServiceProcess


def request_pool(count: int, seed: int = 0) -> list[tuple[list[Atoms], pb.CalculateRequest]]:
    """``count`` requests: 1 to 16 rattled Cu/Ni/Pd/Al/Ag cells of 1 to 8 atoms each."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        n_structures = int(rng.choice([1, 1, 1, 2, 4, 8, 16]))
        structures = []
        for _ in range(n_structures):
            symbol = str(rng.choice(["Cu", "Ni", "Pd", "Al", "Ag"]))
            atoms = bulk(
                symbol, "fcc", a=float(rng.uniform(3.6, 4.1)), cubic=bool(rng.random() < 0.5)
            )
            if rng.random() < 0.3:
                atoms = atoms * (2, 1, 1)
            atoms.rattle(0.03, seed=int(rng.integers(1 << 31)))
            structures.append(atoms)
        pool.append(
            (structures, pb.CalculateRequest(batch=encode_batch(atoms_to_batch(structures))))
        )
    return pool


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.structures = 0
        self.codes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.wrong: list[str] = []

    def take(self) -> tuple[int, int, Counter[str], list[float]]:
        with self.lock:
            taken = (self.requests, self.structures, self.codes, self.latencies)
            self.requests, self.structures, self.codes, self.latencies = 0, 0, Counter(), []
            return taken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--model", choices=["emt", "chgnet"], default="emt")
    parser.add_argument("--every", type=float, default=15.0, help="report interval, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per call, seconds")
    args = parser.parse_args()

    pool = request_pool(64)
    reference: list[list[float] | None] = [None] * len(pool)
    if args.model == "emt":
        for k, (structures, _) in enumerate(pool):
            energies = []
            for atoms in structures:
                atoms = atoms.copy()
                atoms.calc = EMT()
                energies.append(float(atoms.get_potential_energy()))
            reference[k] = energies
    tolerance = 1e-8 if args.model == "emt" else 1e-3  # CHGNet: float32, merged batches
    env = {"UMLIP_TORCH_THREADS": "1"} if args.model == "chgnet" else {}
    stats, totals = Stats(), Stats()
    stop = threading.Event()

    def client(index: int, target: str) -> None:
        rng = np.random.default_rng(index)
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.PotentialServiceStub(channel)
            while not stop.is_set():
                k = int(rng.integers(len(pool)))
                structures, request = pool[k]
                started = time.monotonic()
                try:
                    response = stub.Calculate(request, timeout=args.timeout)
                    code = "OK"
                except grpc.RpcError as error:
                    response, code = None, error.code().name
                latency = time.monotonic() - started
                problem = None
                if response is not None:
                    energies = [
                        r.energy if r.HasField("energy") else np.nan for r in response.results
                    ]
                    if len(energies) != len(structures):
                        problem = f"{len(energies)} results for {len(structures)} structures"
                    elif reference[k] is None:
                        reference[k] = energies
                    elif not np.allclose(energies, reference[k], rtol=0, atol=tolerance):
                        problem = f"request {k}: energies {energies} != {reference[k]}"
                elif code != "RESOURCE_EXHAUSTED":
                    problem = f"status {code}"
                with stats.lock:
                    stats.requests += 1
                    stats.structures += len(structures) if response is not None else 0
                    stats.codes[code] += 1
                    stats.latencies.append(latency)
                    if problem:
                        stats.wrong.append(problem)

    with ServiceProcess(
        python=service_python(args.model), module=f"umlip_{args.model}", env=env
    ) as service:
        print(
            f"soak: {args.model}, {args.clients} clients, {args.seconds:.0f} s; "
            f"service pid {service.pid}, RSS at start {rss_mib(service.pid):.0f} MiB",
            flush=True,
        )
        threads = [
            threading.Thread(target=client, args=(i, service.target), daemon=True)
            for i in range(args.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        header = "   t/s    req/s  struct/s   p50/ms   p99/ms  RSS/MiB  statuses"
        print(header, flush=True)
        rss_samples = []
        last = started
        while (now := time.monotonic()) - started < args.seconds:
            time.sleep(min(args.every, args.seconds - (now - started)))
            now = time.monotonic()
            requests, structures, codes, latencies = stats.take()
            interval = now - last
            last = now
            p50, p99 = (np.percentile(latencies, [50, 99]) * 1000) if latencies else (np.nan,) * 2
            rss = rss_mib(service.pid)
            rss_samples.append(rss)
            print(
                f"{now - started:6.0f} {requests / interval:8.1f} {structures / interval:9.1f} "
                f"{p50:8.1f} {p99:8.1f} {rss:8.0f}  {dict(codes)}",
                flush=True,
            )
            with totals.lock:
                totals.requests += requests
                totals.structures += structures
                totals.codes.update(codes)
                totals.latencies += latencies
        stop.set()
        for thread in threads:
            thread.join(args.timeout + 5)
        elapsed = time.monotonic() - started
        requests, structures, codes, latencies = stats.take()
        totals.requests += requests
        totals.structures += structures
        totals.codes.update(codes)
        totals.latencies += latencies
        log = service.log_path.read_text(errors="replace")
        alive = service.returncode_if_exited() is None
    wrong = stats.wrong
    p50, p99 = np.percentile(totals.latencies, [50, 99]) * 1000
    print(
        f"summary: {totals.requests} requests, {totals.structures} structures in {elapsed:.0f} s "
        f"= {totals.requests / elapsed:.1f} req/s, {totals.structures / elapsed:.1f} structures/s; "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(totals.latencies) * 1000:.0f} ms"
    )
    print(f"statuses: {dict(totals.codes)}; wrong answers or bad statuses: {len(wrong)}")
    print(
        f"service RSS: first {rss_samples[0]:.0f} MiB, last {rss_samples[-1]:.0f} MiB, "
        f"max {max(rss_samples):.0f} MiB; alive at the end: {alive}; "
        f"Traceback in log: {'Traceback' in log}"
    )
    for problem in wrong[:10]:
        print("  " + problem[:300])
    return 1 if wrong or not alive or "Traceback" in log else 0


if __name__ == "__main__":
    sys.exit(main())
