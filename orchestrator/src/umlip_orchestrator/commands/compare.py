"""``umlip compare``: MAPE and relative-error IQR of two runs, property by property."""

from __future__ import annotations

import argparse
import sys

from umlip_orchestrator.report import ReportError, build_comparison


def compare_command(args: argparse.Namespace) -> int:
    """Runs ``umlip compare``; returns the exit code (2 on a bad input, one-line message)."""
    try:
        changes, files = build_comparison(
            args.run_a,
            args.run_b,
            args.out,
            args.reference or (),
            dict(args.pair or ()),
            dict(args.epsilon or ()),
        )
    except ReportError as error:
        print(f"umlip compare: {error}", file=sys.stderr)
        return 2
    for change in changes:
        name = (
            change.model_a
            if change.model_a == change.model_b
            else (f"{change.model_a}->{change.model_b}")
        )
        print(
            f"{name:<20}{change.label:<10}n={change.n_common:<6}"
            f"MAPE {change.mape_a_pct:8.2f}% -> {change.mape_b_pct:8.2f}% "
            f"({change.mape_change_pct:+.1f}%)  "
            f"IQR {change.iqr_a_pct:.2f} -> {change.iqr_b_pct:.2f}"
        )
    print(f"comparison in {files[0].parent}")
    return 0
