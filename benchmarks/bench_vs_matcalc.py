"""Benchmark: umlip (CHGNet service, default run) vs matcalc's ElasticityCalc in-process.

    uv sync --project benchmarks/matcalc                # once: matcalc's own environment
    uv run python benchmarks/bench_vs_matcalc.py        # 20 MP binaries, both ion modes
    uv run python benchmarks/bench_vs_matcalc.py --materials 3 --ion-mode clamped

The same CHGNet checkpoint (pretrained 0.3.0 from the chgnet 0.4.2 wheel, torch
2.13.0+cpu on both sides) on the same materials, ``random.seed(0); random.sample(data,
N)`` of ``shared/data/mp-binary-pbe-elasticity-2025.1.json.gz`` (the sample of issue 11).

- matcalc 0.7.0 runs in a child process of its own environment
  (``benchmarks/matcalc/.venv``, never the orchestrator's), ``run_matcalc.py`` there:
  torch on 2 threads (all cores, as a user would run it), the model loaded and one
  model call made before the clock starts; timed from the first structure to the last.
- umlip: the CHGNet service (``services/chgnet/.venv``, its default settings), started
  once for both modes (start time printed apart) and warmed up with one call; the first
  run also starts Ray, so a 1-material run goes first, untimed (Ray start printed apart).
  Then, per ion mode, the user's default path timed end to end: ``run_benchmark`` (Ray
  actors, Parquet tables) with every setting at its default except ``ion_mode``; K and
  G are read back from the results table.

Settings, made equal explicitly (umlip's defaults handed to matcalc):

- relaxation of the starting cell: FIRE (ASE's parameters) on a FrechetCellFilter,
  fmax 0.1 eV/Å, at most 500 steps, FixSymmetry with symprec 1e-2 Å on both sides.
  matcalc's RelaxCalc defaults to fix_symmetry=False (symprec 1e-3); it is turned on.
- strains: normal ±0.5 %, ±1 %, shear ±3 %, ±6 % (Green-Lagrange, pymatgen's
  DeformedStructureSet convention): umlip's defaults and matcalc 0.7.0's (not ±2/±4 %).
  All 24 cells on both sides (matcalc ``symmetry=False``); the fit includes the
  zero-strain point (``use_equilibrium=True``); moduli in GPa (``units_GPa=True``).
- relaxed ions: positions only in each deformed cell, fmax 0.1, FixSymmetry at 1e-5 Å
  (umlip's deformed-cell tolerance). matcalc's ``ElasticityCalc(relax_structure=True)``
  would give both relaxations one ``relax_calc_kwargs``; so matcalc's side is its
  ``RelaxCalc`` (exactly the one relax_structure=True builds, with the same
  non-convergence error) followed by ``ElasticityCalc(relax_structure=False,
  relax_deformed_structures=<ion mode>, relax_calc_kwargs={fix_symmetry, symprec
  1e-5})``. Differences left: ASE's FixSymmetry in matcalc refines the deformed cell at
  1e-5 Å (umlip builds it on a copy, no refinement); matcalc evaluates each relaxed
  deformed cell once more for its stress; a relaxation that does not converge is a
  failed material in matcalc and a flagged result in umlip; chgnet's calculator takes
  forces and stress through its double-backward training path, the service through one
  backward pass (float32 rounding differs).

Prints each wall time, the ratio matcalc / umlip (> 1: umlip faster), K and G MAE vs
DFT of each tool (on the materials both produced) and their relative difference, the
median and largest per-material |ΔK| and |ΔG| between the tools, how many materials
each produced, and every material a tool failed on, with why.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_USER_ENVIRONMENT = dict(os.environ)  # matcalc's child runs as a user would, unchanged
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # as `umlip run` sets them
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # and these, before Ray is imported
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

from umlip_orchestrator.client import PotentialClient
from umlip_orchestrator.datasets import load_dataset
from umlip_orchestrator.runner import RunConfig, run_benchmark
from umlip_orchestrator.tables import ResultStore
from umlip_orchestrator.workflow import WorkflowSettings
from umlip_wire.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
MP_BINARY = REPO_ROOT.parent / "shared" / "data" / "mp-binary-pbe-elasticity-2025.1.json.gz"
MATCALC_PYTHON = REPO_ROOT / "benchmarks" / "matcalc" / ".venv" / "bin" / "python"
MATCALC_SCRIPT = REPO_ROOT / "benchmarks" / "matcalc" / "run_matcalc.py"
CHGNET_PYTHON = REPO_ROOT / "services" / "chgnet" / ".venv" / "bin" / "python"
MATCALC_TORCH_THREADS = 2
GOAL = "goal: umlip >= 2x faster in both ion modes; K and G MAE within 1 % of matcalc's"


@dataclass
class Outcome:
    """One tool in one ion mode: wall time and per-material moduli (GPa) or errors."""

    wall_s: float
    load: str = ""
    moduli: dict[str, tuple[float, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def load_average() -> float:
    """1-minute load average: the 2 cores are shared, so timings are only as quiet as this."""
    return os.getloadavg()[0]


def sample(count: int) -> list[dict[str, Any]]:
    """The issue-11 sample: ``random.seed(0); random.sample(data, count)``."""
    with gzip.open(MP_BINARY, "rt") as handle:
        data = json.load(handle)
    random.seed(0)
    return random.sample(data, count)


def matcalc_settings(settings: WorkflowSettings) -> dict[str, Any]:
    """umlip's workflow settings in the terms ``run_matcalc.py`` takes."""
    if settings.strains.convention != "strain" or not settings.relax.fix_symmetry:
        raise SystemExit("matcalc can only match umlip's 'strain' convention with FixSymmetry")
    return {
        "fmax": settings.relax.fmax,
        "max_steps": settings.relax.max_steps,
        "symprec": settings.relax.symprec,
        "deformed_symprec": settings.deformation_relax.symprec,
        "norm_strains": list(settings.strains.normal),
        "shear_strains": list(settings.strains.shear),
    }


def run_matcalc(entries: list[dict[str, Any]], mode: str, work: Path) -> tuple[Outcome, dict]:
    """matcalc in its own environment; returns the outcome and its full report."""
    if not MATCALC_PYTHON.exists():
        raise SystemExit(f"{MATCALC_PYTHON} missing: run `uv sync --project benchmarks/matcalc`")
    request = {
        "entries": entries,
        "ion_mode": mode,
        "torch_threads": MATCALC_TORCH_THREADS,
        "settings": matcalc_settings(WorkflowSettings(ion_mode=mode)),
    }
    source, target = work / f"matcalc-{mode}-in.json", work / f"matcalc-{mode}-out.json"
    source.write_text(json.dumps(request))
    log = work / f"matcalc-{mode}.log"
    load_before = load_average()
    with log.open("w") as handle:
        done = subprocess.run(
            [str(MATCALC_PYTHON), str(MATCALC_SCRIPT), str(source), str(target)],
            env=_USER_ENVIRONMENT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"matcalc side failed ({done.returncode}):\n{log.read_text()[-4000:]}")
    report = json.loads(target.read_text())
    outcome = Outcome(wall_s=report["wall_s"], load=f"{load_before:.1f}-{load_average():.1f}")
    for material, row in report["materials"].items():
        if row["error"] is None:
            outcome.moduli[material] = (row["k_vrh_gpa"], row["g_vrh_gpa"])
        else:
            outcome.errors[material] = row["error"]
    return outcome, report


def write_dataset(entries: list[dict[str, Any]], path: Path) -> None:
    """The entries as a gzip JSON list, the format of the bundled sample."""
    with gzip.open(path, "wt") as handle:
        json.dump(entries, handle)
    materials, problems = load_dataset(path)
    if problems or len(materials) != len(entries):
        raise SystemExit(f"umlip cannot read the sample: {problems}")


def run_umlip(target: str, dataset: Path, mode: str, out_dir: Path, limit: int | None = None):
    """The user's default run (Ray, Parquet) of one ion mode, timed end to end."""
    config = RunConfig(
        services={"chgnet": target},
        dataset=dataset,
        out_dir=out_dir,
        workflow=WorkflowSettings(ion_mode=mode),
        limit=limit,
    )
    load_before, started = load_average(), time.perf_counter()
    run_benchmark(config)
    outcome = Outcome(
        wall_s=time.perf_counter() - started, load=f"{load_before:.1f}-{load_average():.1f}"
    )
    columns = ["material_id", "status", "error", "k_vrh_gpa", "g_vrh_gpa"]
    for row in ResultStore(out_dir).read_results().select(columns).to_pylist():
        k, g = row["k_vrh_gpa"], row["g_vrh_gpa"]
        if row["status"] == "ok" and k is not None and g is not None:
            outcome.moduli[row["material_id"]] = (k, g)
        else:
            outcome.errors[row["material_id"]] = f"{row['status']}: {row['error']}"
    return outcome


def compare(
    mode: str, entries: list[dict[str, Any]], matcalc: Outcome, umlip: Outcome
) -> dict[str, Any]:
    """Prints one ion mode's comparison; returns its figures for the goal check."""
    ids = [e["mp_id"] for e in entries]
    dft = {e["mp_id"]: (e["bulk_modulus_vrh"], e["shear_modulus_vrh"]) for e in entries}
    ratio = matcalc.wall_s / umlip.wall_s
    print(f"\n{mode} ions, {len(ids)} materials")
    for name, outcome in (("matcalc", matcalc), ("umlip", umlip)):
        print(
            f"  {name:<8} {outcome.wall_s:8.1f} s   {len(outcome.moduli):3d} materials with K and "
            f"G   (load average {outcome.load} on {os.cpu_count()} cores)"
        )
    print(f"  matcalc / umlip: {ratio:.2f}x ({'umlip' if ratio > 1 else 'matcalc'} faster)")
    for name, outcome in (("matcalc", matcalc), ("umlip", umlip)):
        missing = [m for m in ids if m not in outcome.moduli and m not in outcome.errors]
        for material in ids:
            if material in outcome.errors:
                print(f"  {name} failed {material}: {outcome.errors[material][:200]}")
        for material in missing:
            print(f"  {name} produced no row for {material}")
    both = [m for m in ids if m in matcalc.moduli and m in umlip.moduli and None not in dft[m]]
    figures: dict[str, Any] = {"ratio": ratio, "mae_rel": {}}
    if not both:
        print("  no material produced by both tools: nothing to compare")
        return figures
    print(f"  on the {len(both)} materials both produced (DFT reference known):")
    for index, label in ((0, "K"), (1, "G")):
        mae_m = statistics.fmean(abs(matcalc.moduli[m][index] - dft[m][index]) for m in both)
        mae_u = statistics.fmean(abs(umlip.moduli[m][index] - dft[m][index]) for m in both)
        relative = (mae_u - mae_m) / mae_m if mae_m else float("nan")
        figures["mae_rel"][label] = relative
        delta = [abs(umlip.moduli[m][index] - matcalc.moduli[m][index]) for m in both]
        worst = both[max(range(len(both)), key=delta.__getitem__)]
        print(
            f"    {label} MAE vs DFT: matcalc {mae_m:6.2f} GPa, umlip {mae_u:6.2f} GPa "
            f"(umlip {relative:+.2%});  |Δ{label}| umlip-matcalc: median "
            f"{statistics.median(delta):.3f} GPa, largest {max(delta):.3f} GPa ({worst})"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ion-mode", choices=("clamped", "relaxed", "both"), default="both")
    parser.add_argument("--materials", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="keep the tables and matcalc's reports here")
    args = parser.parse_args()
    modes = ("clamped", "relaxed") if args.ion_mode == "both" else (args.ion_mode,)
    entries = sample(args.materials)
    defaults = WorkflowSettings()
    print(GOAL)
    print(f"sample: random.seed(0); random.sample(<{MP_BINARY.name}>, {args.materials})")
    print(
        "settings (both): CHGNet 0.3.0; FIRE + FrechetCellFilter, fmax "
        f"{defaults.relax.fmax} eV/Å, max {defaults.relax.max_steps} steps, FixSymmetry "
        f"symprec {defaults.relax.symprec} Å (deformed cells {defaults.deformation_relax.symprec}"
        f" Å); strains normal {list(defaults.strains.normal)}, shear "
        f"{list(defaults.strains.shear)} ({defaults.strains.convention} convention), 24 cells"
    )
    print(
        "differences: matcalc = RelaxCalc then ElasticityCalc(relax_structure=False) (one "
        "symprec per ElasticityCalc); its FixSymmetry refines deformed cells, umlip's does not;"
        " unconverged relaxation: matcalc fails, umlip flags"
    )
    results: dict[str, tuple[Outcome, Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vs-matcalc-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        matcalc: dict[str, Outcome] = {}
        for mode in modes:
            matcalc[mode], report = run_matcalc(entries, mode, work)
            print(
                f"matcalc {mode}: {report['versions']}, {report['checkpoint']}, torch threads "
                f"{report['torch_threads']}, model load {report['load_s']:.1f} s and warm-up "
                f"{report['warmup_s']:.1f} s (untimed), timed {report['wall_s']:.1f} s"
            )
            print(f"  RelaxCalc{report['relax_calc']}")
            print(f"  ElasticityCalc{report['elasticity_calc']}")
        dataset = work / "sample.json.gz"
        write_dataset(entries, dataset)
        started = time.perf_counter()
        with ServiceProcess(python=CHGNET_PYTHON, module="umlip_chgnet", start_timeout_s=600) as s:
            start_s = time.perf_counter() - started
            with PotentialClient(s.target) as client:
                info = client.info()
                started = time.perf_counter()
                client.calculate([load_dataset(dataset, limit=1)[0][0].atoms])
                warm_s = time.perf_counter() - started
            started = time.perf_counter()
            run_umlip(s.target, dataset, "clamped", work / "umlip-warmup", limit=1)
            ray_s = time.perf_counter() - started
            print(
                f"umlip: service {info.model_name} {info.checkpoint_name} (chgnet "
                f"{info.model_version}, torch threads: service default) started in "
                f"{start_s:.1f} s, warm-up call {warm_s:.1f} s, Ray start + 1-material run "
                f"{ray_s:.1f} s (all untimed)"
            )
            for mode in modes:
                umlip = run_umlip(s.target, dataset, mode, work / f"umlip-{mode}")
                results[mode] = (matcalc[mode], umlip)
            ray.shutdown()
    figures = {mode: compare(mode, entries, *pair) for mode, pair in results.items()}
    print(f"\n{GOAL}")
    for mode, figure in figures.items():
        fast = figure["ratio"] >= 2.0
        close = len(figure["mae_rel"]) == 2 and all(
            abs(v) <= 0.01 for v in figure["mae_rel"].values()
        )
        rel = ", ".join(f"{k} {v:+.2%}" for k, v in figure["mae_rel"].items())
        print(
            f"  {mode}: {figure['ratio']:.2f}x {'met' if fast else 'NOT met'}; "
            f"MAE {rel or 'n/a'} {'met' if close else 'NOT met'}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
