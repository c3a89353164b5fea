"""``umlip report``: a run's results against DFT, as tables, figures and an HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from umlip_orchestrator.report import ReportError, build_report


def report_command(args: argparse.Namespace) -> int:
    """Runs ``umlip report``; returns the exit code (2 on a bad input, one-line message)."""
    out = args.out if args.out is not None else args.results_dir / "report"
    try:
        analysis, files = build_report(
            args.results_dir,
            out,
            args.reference or (),
            dict(args.epsilon or ()),
            study_path=None if args.study in (None, "shipped") else Path(args.study),
            with_study=args.study is not None,
            allow_mixed_settings=args.allow_mixed_settings,
        )
    except ReportError as error:
        print(f"umlip report: {error}", file=sys.stderr)
        return 2
    overview = analysis.overview
    print(
        f"report in {files.out_dir}: {overview.n_used} materials vs {overview.reference} "
        f"({overview.n_dft_unstable_removed} DFT-unstable removed, "
        f"{overview.n_no_reference_values} without reference values), "
        f"{len(analysis.models)} models; open {files.index}"
    )
    return 0
