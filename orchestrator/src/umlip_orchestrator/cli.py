"""The ``umlip`` command line. Flags live here only; everything else takes settings objects."""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process: relaxation runs many Python threads, and spinning
# BLAS threads on top of them made lockstep runs several times slower. Ray workers
# inherit these. Set before numpy is imported.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
# Under `uv run`, Ray would package the working directory and start workers with
# `uv run`; the orchestrator's environment is already installed.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Never report usage statistics to the outside world.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import logging
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from umlip_orchestrator import __version__
from umlip_orchestrator.package_data import BUNDLED_SAMPLE

DEFAULT_STATE_DIR = Path(".umlip")


def _key_value(expected: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for ``KEY=VALUE`` (both non-empty); ``expected`` names them."""

    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return key, value

    return parse


_service_arg = _key_value("NAME=HOST:PORT")
_pair_arg = _key_value("MODEL_A=MODEL_B")
_service_checkpoint_arg = _key_value("MODEL=CHECKPOINT")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _epsilon_arg(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not sep or not name or not number >= 0:
        raise argparse.ArgumentTypeError(f"expected PROPERTY=NUMBER >= 0, got {text!r}")
    return name, number


def _add_reference_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--reference",
        action="append",
        type=Path,
        metavar="PATH",
        help="DFT reference dataset (repeatable; earlier files win per material); default: "
        "the reference K and G stored in the results (see docs/report.md)",
    )
    command.add_argument(
        "--epsilon",
        action="append",
        type=_epsilon_arg,
        metavar="PROPERTY=VALUE",
        help="leave materials with |DFT value| < VALUE out of MAPE and relative errors "
        "(repeatable; properties: k_vrh g_vrh youngs_modulus poisson_ratio pugh_ratio "
        "universal_anisotropy cauchy_pressure debye_temperature)",
    )


def _add_checkpoint_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--checkpoint",
        action="append",
        type=_service_checkpoint_arg,
        metavar="MODEL=CHECKPOINT",
        help="start MODEL's local service with this checkpoint (a name the model knows, a "
        "file, or a `umlip finetune run` output folder, served as <model>-ft-<sha8>); "
        "repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="umlip", description="Elastic benchmarks of interatomic potentials served over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"umlip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run (or resume) the elastic benchmark")
    run.add_argument(
        "--service",
        action="append",
        type=_service_arg,
        default=[],
        metavar="NAME=HOST:PORT",
        help="a potential service to benchmark (repeatable); none: start the local default set",
    )
    run.add_argument("--endpoints", type=Path, help="JSON endpoint list {services: {name: target}}")
    run.add_argument(
        "--models",
        help="comma-separated services (services/<name>/service.toml, in the nearest "
        "services/ at or above the working directory, or $UMLIP_SERVICES_DIR) to launch "
        "locally (default: the default set)",
    )
    _add_checkpoint_flag(run)
    run.add_argument(
        "--dataset",
        type=Path,
        default=BUNDLED_SAMPLE,
        help="structures to compute (default: the bundled 20-material Materials Project sample)",
    )
    run.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    run.add_argument("--limit", type=_positive_int, help="only the first N materials")
    run.add_argument("--ion-mode", choices=("relaxed", "clamped"), default="relaxed")
    run.add_argument("--fmax", type=_positive_float, default=0.1, help="eV/Å (default 0.1)")
    run.add_argument("--max-steps", type=_positive_int, default=500)
    run.add_argument("--no-fix-symmetry", action="store_true", help="do not keep the space group")
    run.add_argument("--normal-strains", default="-0.01,-0.005,0.005,0.01")
    run.add_argument("--shear-strains", default="-0.06,-0.03,0.03,0.06")
    run.add_argument(
        "--group-size", type=_positive_int, default=256, help="materials per actor task"
    )
    run.add_argument(
        "--actors-per-service",
        type=_positive_int,
        default=1,
        help="orchestrator processes (Ray actors) feeding each service",
    )
    run.add_argument(
        "--max-active",
        type=_positive_int,
        default=128,
        help="structures computed at once per actor (within the service's atom budget)",
    )
    run.add_argument(
        "--unavailable-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a call retries a service that does not answer before its task is "
        "retried (3 times); then its materials are failed rows and the exit status is 3",
    )
    run.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where `umlip services up` keeps its endpoint list (used when it is running)",
    )

    services = commands.add_parser("services", help="local potential services (no Docker)")
    services.add_argument("action", choices=("up", "down", "status"))
    services.add_argument("--models", help="comma-separated names (default: the default set)")
    services.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    _add_checkpoint_flag(services)

    report = commands.add_parser("report", help="compare a run's results with DFT")
    report.add_argument("results_dir", type=Path, help="a run's output directory")
    report.add_argument("--out", type=Path, help="report directory (default RESULTS_DIR/report)")
    _add_reference_flags(report)
    report.add_argument(
        "--study",
        nargs="?",
        const="shipped",
        metavar="PATH",
        help="put the published figures of the study (Gao & Wang 2025) next to ours; "
        "without PATH the copy shipped with umlip",
    )
    report.add_argument(
        "--allow-mixed-settings",
        action="store_true",
        help="report runs with different settings (resumed into one folder) together, "
        "with a warning at the top, instead of refusing",
    )

    compare = commands.add_parser("compare", help="MAPE and IQR change between two runs")
    compare.add_argument("run_a", type=Path, help="output directory of the first run")
    compare.add_argument("run_b", type=Path, help="output directory of the second run")
    compare.add_argument("--out", type=Path, required=True, help="comparison directory")
    compare.add_argument(
        "--pair",
        action="append",
        type=_pair_arg,
        metavar="MODEL_A=MODEL_B",
        help="compare model MODEL_A of run A with MODEL_B of run B (repeatable); default: "
        "models of the same name, or the only model of each run",
    )
    compare.add_argument(
        "--selection",
        type=Path,
        help="a `umlip finetune select` folder: report trained, held-out and forgetting "
        "materials apart (also automatic from a fine-tuned model's provenance)",
    )
    _add_reference_flags(compare)
    from umlip_orchestrator.commands.finetune import add_finetune_parser

    add_finetune_parser(commands)
    return parser


def protect_local_ray() -> bool:
    """Makes the Ray cluster this process will start require a fresh random token.

    Ray's own servers listen on every interface whatever the node address, so a local
    cluster must not be open to whoever reaches the machine. Ray reads its
    authentication mode when it is imported: this must run first. Does nothing (False)
    if the user chose a mode (``RAY_AUTH_MODE``) or Ray is already imported.
    """
    if "RAY_AUTH_MODE" in os.environ or "ray" in sys.modules:
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``umlip``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "run" and not args.ray_address:
        protect_local_ray()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "run":
        from umlip_orchestrator.commands.run import run_command

        return run_command(args)
    if args.command == "services":
        from umlip_orchestrator.commands.services import services_command

        return services_command(args)
    if args.command == "report":
        from umlip_orchestrator.commands.report import report_command

        return report_command(args)
    if args.command == "compare":
        from umlip_orchestrator.commands.compare import compare_command

        return compare_command(args)
    if args.command == "finetune":
        from umlip_orchestrator.commands.finetune import finetune_command

        return finetune_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
