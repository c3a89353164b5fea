"""Benchmark reports against DFT (SCIENCE.md §4) and comparisons of two runs (§5).

- :mod:`.reference`: DFT reference values per material, with the DFT-stability filter.
- :mod:`.metrics`: the statistics (MAE, Pearson R, MAPE, relative errors, stability).
- :mod:`.analysis`: a results table joined with a reference, as report tables.
- :mod:`.figures`, :mod:`.page`: figures (PNG and SVG), ``summary.md``, ``index.html``.
- :mod:`.build`: ``umlip report``; :mod:`.compare`: ``umlip compare``.

The rules (NaN handling, zero references, scopes) are in ``docs/report.md``.
"""

from umlip_orchestrator.report.analysis import Analysis, analyse, read_results
from umlip_orchestrator.report.build import (
    REPORT_TABLES,
    ReportFiles,
    build_report,
    default_reference,
    load_references,
    write_report,
)
from umlip_orchestrator.report.compare import PropertyChange, build_comparison, compare_analyses
from umlip_orchestrator.report.errors import ReportError
from umlip_orchestrator.report.reference import (
    ReferenceRow,
    ReferenceSet,
    load_reference,
    reference_from_results,
    reference_row,
)
from umlip_orchestrator.report.spec import PROPERTIES, PropertySpec

__all__ = [
    "PROPERTIES",
    "REPORT_TABLES",
    "Analysis",
    "PropertyChange",
    "PropertySpec",
    "ReferenceRow",
    "ReferenceSet",
    "ReportError",
    "ReportFiles",
    "analyse",
    "build_comparison",
    "build_report",
    "compare_analyses",
    "default_reference",
    "load_reference",
    "load_references",
    "read_results",
    "reference_from_results",
    "reference_row",
    "write_report",
]
