"""``umlip run``: the elastic benchmark, with a progress bar and a printed summary."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from contextlib import ExitStack

import pyarrow.compute as pc
from tqdm import tqdm

from umlip_orchestrator.commands.services import select_models
from umlip_orchestrator.elastic import StrainSettings
from umlip_orchestrator.launcher import (
    LauncherError,
    LocalFleet,
    read_endpoints,
    read_service_list,
    with_checkpoints,
    write_endpoints,
)
from umlip_orchestrator.records import MaterialResult
from umlip_orchestrator.relax import RelaxSettings
from umlip_orchestrator.runner import RunConfig, RunSummary, run_benchmark
from umlip_orchestrator.supervisor import ENDPOINTS, supervisor_pid
from umlip_orchestrator.tables import ResultStore
from umlip_orchestrator.workflow import WorkflowSettings


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SystemExit(
            f"umlip run: --{name} must be comma-separated numbers, got {text!r}"
        ) from None


def _fail(message: str) -> int:
    print(f"umlip run: {message}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    """Runs ``umlip run``; returns the exit code."""
    try:
        workflow = WorkflowSettings(
            relax=RelaxSettings(
                fmax=args.fmax, max_steps=args.max_steps, fix_symmetry=not args.no_fix_symmetry
            ),
            strains=StrainSettings(
                normal=_floats(args.normal_strains, "normal-strains"),
                shear=_floats(args.shear_strains, "shear-strains"),
            ),
            ion_mode=args.ion_mode,
            max_active=args.max_active,
        )
    except (TypeError, ValueError) as error:
        return _fail(str(error))
    if not args.dataset.exists():
        return _fail(f"dataset {args.dataset} does not exist")
    services = dict(args.service)
    with ExitStack() as stack:
        if args.endpoints:
            try:
                services |= read_endpoints(args.endpoints)
            except LauncherError as error:
                return _fail(str(error))
        launched_skips: dict[str, str] = {}
        if services and args.checkpoint:
            return _fail("--checkpoint applies to locally started services, not to --service")
        if not services and supervisor_pid(args.state_dir) is not None:
            up = read_endpoints(args.state_dir / ENDPOINTS)
            services = up
            if args.models:
                wanted = [n.strip() for n in args.models.split(",") if n.strip()]
                if missing := [n for n in wanted if n not in up]:
                    return _fail(
                        f"--models {','.join(missing)} not among the services that are up "
                        f"({', '.join(up) or 'none'}); run `umlip services down` first, or "
                        f"`umlip services up --models ...` with them"
                    )
                services = {n: up[n] for n in wanted}
            print(f"umlip: using the services that are up: {', '.join(services)}", file=sys.stderr)
        if not services:
            try:
                available = read_service_list()
                names = select_models(args.models)
            except LauncherError as error:
                return _fail(str(error))
            print(f"umlip: starting local services: {', '.join(names)}", file=sys.stderr)
            try:
                chosen = with_checkpoints(
                    [available[n] for n in names], dict(args.checkpoint or ())
                )
            except LauncherError as error:
                return _fail(str(error))
            fleet = stack.enter_context(LocalFleet(chosen, args.out / "service-logs"))
            services = fleet.endpoints
            launched_skips = fleet.unavailable
            for name, reason in launched_skips.items():
                print(f"umlip: model {name} skipped: {reason}", file=sys.stderr)
            if not services:
                return _fail("no service could be started")
            write_endpoints(args.out / "endpoints.json", services)
        try:
            config = RunConfig(
                services=services,
                dataset=args.dataset,
                out_dir=args.out,
                workflow=workflow,
                limit=args.limit,
                actors_per_service=args.actors_per_service,
                group_size=args.group_size,
                unavailable_timeout_s=args.unavailable_timeout,
                ray_address=args.ray_address,
            )
        except ValueError as error:
            return _fail(str(error))
        bar = None if args.no_progress else _ProgressBar()
        try:
            summary = run_benchmark(
                config,
                progress=bar.update if bar else None,
                planned=bar.planned if bar else None,
            )
        except ValueError as error:  # DatasetError, or two services under one model name
            return _fail(str(error))
        except OSError as error:  # the output cannot be written (read-only, disk full)
            return _fail(
                f"cannot write the results in {args.out}: {error}. The rows written before "
                "are kept; fix the output and run the same command again to resume."
            )
        finally:
            if bar:
                bar.close()
    print_summary(summary, launched_skips)
    return exit_status(summary)


#: Exit status of a run some of whose materials failed because a service did not
#: answer (or a model could not be used at all): the table is partial, a rerun resumes.
PARTIAL = 3


def exit_status(summary: RunSummary) -> int:
    """0: every model answered; 1: none did; :data:`PARTIAL`: some work was lost to an
    unavailable service (rerunning the same command computes just that)."""
    models = list(summary.models.values())
    if models and all(m.unavailable for m in models):
        return 1
    lost = [m for m in models if m.unavailable or m.service_failures]
    if lost:
        for m in lost:
            why = m.unavailable or f"{m.service_failures} materials failed: service unavailable"
            print(f"umlip run: partial: {m.model}: {why}; rerun to resume", file=sys.stderr)
        return PARTIAL
    return 0


class _ProgressBar:
    """(Material, model) rows done of the planned total, failures, and materials per
    second (tqdm's rate), over all models."""

    def __init__(self) -> None:
        self._bar = tqdm(desc="materials x models", unit="mat", dynamic_ncols=True,
                         file=sys.stderr)  # fmt: skip
        self._failures = 0

    def planned(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def update(self, model: str, rows: Sequence[MaterialResult]) -> None:
        self._failures += sum(r.status == "failed" for r in rows)
        self._bar.set_postfix(model=model, failures=self._failures, refresh=False)
        self._bar.update(len(rows))

    def close(self) -> None:
        self._bar.close()


def _mae(table: object, column: str, reference: str) -> tuple[float, int]:
    pred = table.column(column).to_numpy(zero_copy_only=False)  # type: ignore[attr-defined]
    ref = table.column(reference).to_numpy(zero_copy_only=False)  # type: ignore[attr-defined]
    pairs = [(p, r) for p, r in zip(pred, ref, strict=True) if p is not None and r is not None]
    pairs = [
        (float(p), float(r))
        for p, r in pairs
        if math.isfinite(float(p)) and math.isfinite(float(r))
    ]
    if not pairs:
        return math.nan, 0
    return sum(abs(p - r) for p, r in pairs) / len(pairs), len(pairs)


def print_summary(summary: RunSummary, launch_skips: dict[str, str]) -> None:
    """Per model: materials done, failures, skipped, K and G MAE vs DFT, s/material."""
    table = ResultStore(summary.out_dir).read_results()
    print(f"\nresults in {summary.out_dir} ({summary.wall_time_s:.0f} s)")
    header = (
        f"{'model':<12}{'ok':>5}{'failed':>8}{'skipped':>9}{'K MAE':>9}{'G MAE':>9}{'s/mat':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, model in summary.models.items():
        if model.unavailable:
            print(f"{name:<12} unavailable: {model.unavailable}")
            continue
        rows = table.filter(pc.equal(table.column("model"), name))
        ok = rows.filter(pc.equal(rows.column("status"), "ok"))
        k_mae, _ = _mae(ok, "k_vrh_gpa", "reference_k_vrh_gpa")
        g_mae, _ = _mae(ok, "g_vrh_gpa", "reference_g_vrh_gpa")
        seconds = ok.column("seconds_per_material").to_numpy(zero_copy_only=False)
        per_material = float(seconds.mean()) if len(seconds) else math.nan
        failed = int(pc.sum(pc.equal(rows.column("status"), "failed")).as_py() or 0)
        skipped = int(pc.sum(pc.equal(rows.column("status"), "skipped")).as_py() or 0)
        print(
            f"{name:<12}{ok.num_rows:>5}{failed:>8}{skipped:>9}"
            f"{k_mae:>9.1f}{g_mae:>9.1f}{per_material:>8.2f}"
        )
    for name, reason in launch_skips.items():
        print(f"{name:<12} skipped: {reason}")
    for name, model in summary.models.items():
        if model.actor_nodes:
            nodes = ", ".join(sorted(set(model.actor_nodes)))
            print(f"{name}: {len(model.actor_nodes)} Ray actor(s) on node(s) {nodes}")
    if summary.ray_nodes:
        print(f"Ray nodes with CPUs: {', '.join(summary.ray_nodes)}")
    if summary.dataset_problems:
        print(f"{len(summary.dataset_problems)} dataset entries could not be read:")
        for problem in summary.dataset_problems[:10]:
            print(f"  {problem}")
    print("MAE in GPa vs the dataset's DFT K_VRH and G_VRH, over materials computed.")
