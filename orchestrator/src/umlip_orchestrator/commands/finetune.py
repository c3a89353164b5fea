"""``umlip finetune select|label|run``: from "these materials are wrong" to a fine-tuned
checkpoint (SCIENCE.md §5)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from umlip_orchestrator.finetune.labels import LabelError, label_selection
from umlip_orchestrator.finetune.launch import absolute, run_finetune
from umlip_orchestrator.finetune.matching import Tolerance
from umlip_orchestrator.finetune.selection import (
    SelectionError,
    SelectionSettings,
    select_configurations,
)
from umlip_orchestrator.launcher import LauncherError
from umlip_orchestrator.report import ReportError

#: ``umlip finetune run`` options passed on to the model's fine-tuning module, if given.
FORWARDED = (
    "base_checkpoint", "epochs", "learning_rate", "energy_weight", "force_weight",
    "stress_weight", "batch_size", "seed", "device", "valid_fraction", "label_source",
    "torch_threads",
)  # fmt: skip


def add_finetune_parser(commands: argparse._SubParsersAction) -> None:
    """Adds ``finetune`` and its three subcommands to the ``umlip`` parser."""
    finetune = commands.add_parser("finetune", help="select, label and fine-tune a model")
    steps = finetune.add_subparsers(dest="step", required=True)

    select = steps.add_parser("select", help="the worst materials and their strained cells")
    select.add_argument("results_dir", type=Path, help="a run's output directory")
    select.add_argument("--model", required=True, help="model whose errors rank the materials")
    select.add_argument("--worst", type=int, required=True, help="how many materials to pick")
    select.add_argument(
        "--by",
        default="k_g_mean",
        help="property ranking them (k_vrh, g_vrh, ...; default: mean of K_VRH and G_VRH)",
    )
    select.add_argument(
        "--hold-out",
        type=float,
        default=0.25,
        help="share of the picked materials kept out of training (default 0.25)",
    )
    select.add_argument("--rattle", type=int, default=0, help="rattled copies per deformed cell")
    select.add_argument("--rattle-stdev", type=float, default=0.02, help="Å (default 0.02)")
    select.add_argument("--seed", type=int, default=0)
    select.add_argument(
        "--reference",
        action="append",
        type=Path,
        metavar="PATH",
        help="DFT reference dataset (default: the K and G in the results)",
    )
    select.add_argument("--out", type=Path, required=True, help="selection folder")

    label = steps.add_parser("label", help="attach reference labels to a selection")
    label.add_argument("selection_dir", type=Path, help="output folder of `finetune select`")
    label.add_argument("--labels", nargs="+", type=Path, default=[], metavar="FILE",
                       help="labelled frames: extxyz, vasprun.xml, OUTCAR, ...")  # fmt: skip
    label.add_argument(
        "--label-source",
        default="dft",
        help="where the labels come from: dft (default), dft-tensor, model:<name>",
    )
    label.add_argument("--cell-tol", type=float, default=Tolerance.cell_a, help="Å")
    label.add_argument("--position-tol", type=float, default=Tolerance.position_a, help="Å")
    label.add_argument("--out", type=Path, help="training file (default SELECTION/training.xyz)")

    run = steps.add_parser("run", help="fine-tune a model in its own environment")
    run.add_argument("--model", required=True, help="a service (services/<name>/service.toml)")
    run.add_argument("--train", type=Path, required=True, help="canonical training file")
    run.add_argument("--valid", type=Path, help="validation file (default: part of --train)")
    run.add_argument("--out", type=Path, required=True, help="output folder")
    run.add_argument("--base-checkpoint", help="start from this checkpoint (default: the model's)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--learning-rate", "--lr", type=float)
    run.add_argument("--energy-weight", type=float)
    run.add_argument("--force-weight", type=float)
    run.add_argument("--stress-weight", type=float)
    run.add_argument("--batch-size", type=int)
    run.add_argument(
        "--freeze",
        action="append",
        default=[],
        metavar="PREFIX",
        help="keep parameters whose name starts with PREFIX fixed (repeatable)",
    )
    run.add_argument("--seed", type=int)
    run.add_argument("--device", help="torch device (default cpu)")
    run.add_argument("--valid-fraction", type=float)
    run.add_argument("--label-source", help="for training files whose frames carry none")
    run.add_argument("--torch-threads", type=int)


def _path(text: str):
    from pathlib import Path

    return Path(text)


def finetune_command(args: argparse.Namespace) -> int:
    """Runs ``umlip finetune STEP``; returns the exit code (2: bad input)."""
    try:
        if args.step == "select":
            return _select(args)
        if args.step == "label":
            return _label(args)
        return _run(args)
    except (SelectionError, LabelError, ReportError, LauncherError) as error:
        print(f"umlip finetune {args.step}: {error}", file=sys.stderr)
        return 2


def _select(args: argparse.Namespace) -> int:
    settings = SelectionSettings(
        model=args.model,
        worst=args.worst,
        by=args.by,
        hold_out=args.hold_out,
        rattle=args.rattle,
        rattle_stdev_a=args.rattle_stdev,
        seed=args.seed,
    )
    selection = select_configurations(args.results_dir, args.out, settings, args.reference or ())
    print(f"{'material':<16}{'formula':<12}{'|rel. error| %':>16}  role")
    for m in selection.materials:
        print(f"{m.material_id:<16}{m.formula:<12}{m.relative_error_pct:>16.1f}  {m.role}")
    print(
        f"{len(selection.configurations)} configurations of "
        f"{sum(m.role == 'train' for m in selection.materials)} materials in {args.out} "
        f"(configurations.xyz, poscar/<id>/POSCAR, selection.json); label them, then run "
        f"`umlip finetune label {args.out} --labels FILE...`"
    )
    return 0


def _label(args: argparse.Namespace) -> int:
    outcome = label_selection(
        args.selection_dir,
        args.labels,
        args.label_source,
        Tolerance(cell_a=args.cell_tol, position_a=args.position_tol),
        args.out,
    )
    for miss in outcome.unmatched:
        print(f"unmatched: {miss.source} frame {miss.frame} ({miss.formula}): {miss.reason}")
    print(
        f"{outcome.n_matched} of {outcome.n_configurations} configurations labelled "
        f"(label_source={outcome.label_source}), {len(outcome.unmatched)} label frames "
        f"unused; training file {outcome.training_file}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    forwarded = ["--train", absolute(args.train), "--out", absolute(args.out)]
    if args.valid is not None:
        forwarded += ["--valid", absolute(args.valid)]
    for name in FORWARDED:
        value = getattr(args, name)
        if value is not None:
            forwarded += [f"--{name.replace('_', '-')}", str(value)]
    for prefix in args.freeze:
        forwarded += ["--freeze", prefix]
    status = run_finetune(args.model, forwarded)
    if status == 0:
        print(
            f"serve it: umlip services up --models {args.model} --checkpoint "
            f"{args.model}={args.out}   (or umlip run --models {args.model} --checkpoint ...)"
        )
    return status
