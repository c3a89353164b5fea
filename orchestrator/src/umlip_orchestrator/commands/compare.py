"""``umlip compare``: MAPE and relative-error IQR of two runs, property by property, and
the protocol sensitivity (settings that differ, how many materials move by > 5 %)."""

from __future__ import annotations

import argparse
import sys

from umlip_orchestrator.finetune.selection import SelectionError, read_selection
from umlip_orchestrator.report import ReportError, build_comparison


def compare_command(args: argparse.Namespace) -> int:
    """Runs ``umlip compare``; returns the exit code (2 on a bad input, one-line message)."""
    try:
        selection = read_selection(args.selection) if args.selection else None
        comparison = build_comparison(
            args.run_a,
            args.run_b,
            args.out,
            args.reference or (),
            dict(args.pair or ()),
            dict(args.epsilon or ()),
            selection,
        )
    except (ReportError, SelectionError) as error:
        print(f"umlip compare: {error}", file=sys.stderr)
        return 2
    for line in comparison.provenance:
        print(line)
    for change in comparison.changes:
        if change.group != "all":
            continue
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
    if any(c.group != "all" for c in comparison.changes):
        print(comparison.tables)
    for note in comparison.notes:
        print(f"note: {note}")
    changed = [c.text() for c in comparison.settings_changed]
    print("settings that differ: " + ("; ".join(changed) if changed else "none (run-to-run noise)"))
    for row in comparison.sensitivity:
        name = row.model_a if row.model_a == row.model_b else f"{row.model_a}->{row.model_b}"
        print(
            f"{name:<20}{row.label:<10}n={row.n_common:<6}"
            f"moved >{row.threshold_pct:g}%: {row.n_moved:<5}"
            f"median shift {row.median_shift_pct:+.2f}% ({row.median_shift:+.4g}"
            + (f" {row.unit})" if row.unit else ")")
        )
    if comparison.strain_flags:
        print(
            f"{len(comparison.strain_flags)} results with a strain-dependent tensor "
            f"(> {comparison.strain_flags[0].threshold_pct:g} %), listed in compare.md"
        )
    print(f"comparison in {comparison.files[0].parent}")
    return 0
