"""Long fuzz run against a real EMT or CHGNet server (the CI version is tests/serve/test_fuzz.py).

    uv run python benchmarks/fuzz.py --requests 10000 [--model emt|chgnet] [--seed N]

Sends at least ``--requests`` requests of the kinds of ``tests/serve/fuzz_requests.py``
(valid crystals, field-level and byte-level mutations, garbage, requests at and over the
atom and message limits), each followed, unless valid, by a known good request whose
energies are checked. Prints the counts per status code and per kind and the largest
latency; exits 1 on any problem (INTERNAL or UNKNOWN, a status not allowed for the case,
a hang past the deadline, a wrong result count or energy, a traceback in the log).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "serve"), str(ROOT / "tests")]

import grpc
from conftest import service_python
from fuzz_requests import Fuzzer, Target, cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import CHGNET_LIMITS, DEADLINE_S, EMT_LIMITS, emt_energy

from umlip_wire.process import ServiceProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--model", choices=["emt", "chgnet"], default="emt")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds per call")
    args = parser.parse_args()

    env = dict(EMT_LIMITS if args.model == "emt" else {**CHGNET_LIMITS, "UMLIP_TORCH_THREADS": "1"})
    started = time.monotonic()
    with (
        ServiceProcess(
            python=service_python(args.model), module=f"umlip_{args.model}", env=env
        ) as service,
        grpc.insecure_channel(service.target) as channel,
    ):
        fuzzer = Fuzzer(
            channel,
            reference=emt_energy if args.model == "emt" else None,
            timeout_s=args.deadline,
            strict=False,
            **({} if args.model == "emt" else {"rtol": 1e-5, "atol": 1e-5}),
        )
        target = Target.of(channel, max_valid_atoms=16 if args.model == "emt" else 8)

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(cases(target), min_size=1, max_size=8))
        def run(batch: list) -> None:
            fuzzer.run(batch)

        while fuzzer.requests < args.requests:  # fresh random examples each round
            run()
            print(
                f"  ... {fuzzer.requests} requests, {time.monotonic() - started:.0f} s", flush=True
            )
        log = service.log_path.read_text(errors="replace")
        alive = service.returncode_if_exited() is None
    print(f"model: {args.model}, limits {env}, deadline {args.deadline} s")
    print(fuzzer.report())
    print(f"wall time: {time.monotonic() - started:.0f} s; server alive at the end: {alive}")
    problems = list(fuzzer.problems)
    if "Traceback" in log:
        problems.append("Traceback in the server log")
    if not alive:
        problems.append("server exited")
    internal = fuzzer.codes["INTERNAL"] + fuzzer.codes["UNKNOWN"]
    print(f"problems: {len(problems)}; INTERNAL/UNKNOWN: {internal}")
    for problem in problems[:20]:
        print("  " + problem[:400])
    assert internal == 0, "INTERNAL or UNKNOWN answered"
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
