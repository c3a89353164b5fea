"""Protocol sensitivity end to end: the same EMT materials run with fmax 0.1 and 0.01
(relaxed ions, a real EMT service process, real Ray), then ``umlip compare``; the
settings diff and the per-property counts against an independent computation from the
two results tables."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import ase.io
import pyarrow.parquet as pq
import pytest
from ray_nodes import RAY_TEST_ENV

from umlip_orchestrator.cli import main
from umlip_orchestrator.examples import emt_crystals
from umlip_orchestrator.report.compare import SensitivityRow, StrainFlagRow
from umlip_orchestrator.report.io import read_rows
from umlip_orchestrator.report.spec import PROPERTIES
from umlip_wire.process import ServiceProcess

#: fcc Cu, then the strained, rattled, sheared and squeezed crystals (far from their
#: minimum, where fmax matters).
PICKED = (0, 15, 16, 17, 19)
RUN_FLAGS = ["--ion-mode", "relaxed", "--group-size", "5", "--no-progress"]


def _umlip_run(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "umlip_orchestrator.cli", "run", *args, *RUN_FLAGS],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **RAY_TEST_ENV},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(
    emt_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sensitivity")
    crystals = emt_crystals()
    dataset = root / "emt5.extxyz"
    ase.io.write(dataset, [crystals[i] for i in PICKED], format="extxyz")
    out = (root / "fmax-0.1", root / "fmax-0.01")
    for fmax, run in zip(("0.1", "0.01"), out, strict=True):
        service = f"emt={emt_service.target}"
        _umlip_run("--service", service, "--dataset", str(dataset), "--out", str(run),
                   "--fmax", fmax)  # fmt: skip
    return out


def test_compare_reports_protocol_sensitivity(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_a, run_b = runs
    out = tmp_path / "compare"
    # No reference K and G in EMT's dataset: the DFT part is left out, not an error.
    assert main(["compare", str(run_a), str(run_b), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "relax.fmax: 0.1 -> 0.01" in stdout

    text = (out / "compare.md").read_text(encoding="utf-8")
    section = text[text.index("## Protocol sensitivity") :]
    assert "`relax.fmax`: 0.1 -> 0.01" in section
    assert "`deformation_relax.fmax`: 0.1 -> 0.01" in section
    assert "max_active" not in section and "identical" not in section
    assert "no DFT comparison" in text

    rows = read_rows(out / "sensitivity.parquet", SensitivityRow)
    assert [r.property for r in rows] == [p.key for p in PROPERTIES]
    assert all("relax.fmax: 0.1 -> 0.01" in r.settings_changed for r in rows)
    assert pq.read_schema(out / "sensitivity.parquet").field("median_shift_pct").metadata == {
        b"unit": b"%"
    }

    # Independent computation from the two results tables.
    tables = [pq.read_table(run / "results.parquet").to_pylist() for run in runs]
    for table in tables:
        assert len(table) == len(PICKED) and {r["status"] for r in table} == {"ok"}
        assert all(len(r["strain_dependence_pct"]) == 6 for r in table)
        assert all(len(r["small_strain_tensor_gpa"]) == 36 for r in table)
        assert all(r["max_strain_dependence_pct"] >= 0.0 for r in table)
    a, b = ({r["material_id"]: r for r in table} for table in tables)
    total_moved = 0
    for prop, row in zip(PROPERTIES, rows, strict=True):
        common = [
            m
            for m in a.keys() & b.keys()
            if a[m][prop.column] is not None
            and b[m][prop.column] is not None
            and math.isfinite(a[m][prop.column])
            and math.isfinite(b[m][prop.column])
        ]
        relative = [m for m in common if abs(a[m][prop.column]) >= prop.epsilon]
        shift = {m: 100 * (b[m][prop.column] - a[m][prop.column]) / abs(a[m][prop.column])
                 for m in relative}  # fmt: skip
        moved = sum(abs(s) > 5.0 for s in shift.values())
        assert (row.n_common, row.n_relative, row.n_moved) == (len(common), len(relative), moved)
        if relative:
            assert row.median_shift_pct == pytest.approx(statistics.median(shift.values()))
        deltas = [b[m][prop.column] - a[m][prop.column] for m in common]
        if deltas:
            assert row.median_shift == pytest.approx(statistics.median(deltas))
        total_moved += moved
        assert f"| emt | {prop.label} | {len(common)} | {len(relative)} | {moved} |" in section

    # Strain-dependence flags: exactly the rows above the threshold.
    flags = read_rows(out / "strain_flags.parquet", StrainFlagRow)
    expected = sorted(
        (run, m, r["max_strain_dependence_pct"])
        for run, rows_ in (("A", a), ("B", b))
        for m, r in rows_.items()
        if r["max_strain_dependence_pct"] > 10.0
    )
    assert sorted((f.run, f.material_id, f.max_strain_dependence_pct) for f in flags) == expected


def test_identical_settings_are_reported_as_noise(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run_a, _ = runs
    out = tmp_path / "same"
    assert main(["compare", str(run_a), str(run_a), "--out", str(out)]) == 0
    section = (out / "compare.md").read_text(encoding="utf-8")
    assert "workflow settings are identical" in section
    rows = read_rows(out / "sensitivity.parquet", SensitivityRow)
    assert all(r.n_moved == 0 and r.settings_changed == "" for r in rows)
    assert all(r.median_shift_pct == 0.0 for r in rows if r.n_relative)


def test_runs_written_before_the_diagnostic_still_compare(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A results table without the strain-dependence columns (an older run) and without a
    manifest: the comparison is written, with notes instead of flags and settings."""
    run_a, run_b = runs
    old = tmp_path / "old"
    old.mkdir()
    table = pq.read_table(run_a / "results.parquet")
    new = ["small_strain_tensor_gpa", "strain_dependence_pct", "max_strain_dependence_pct"]
    pq.write_table(table.drop_columns(new), old / "results.parquet")
    out = tmp_path / "compare"
    assert main(["compare", str(old), str(run_b), "--out", str(out)]) == 0
    text = (out / "compare.md").read_text(encoding="utf-8")
    assert "run A has no max_strain_dependence_pct column" in text
    assert "settings could not be compared" in text
    rows = read_rows(out / "sensitivity.parquet", SensitivityRow)
    assert rows[0].n_common == len(PICKED)
    assert all(f.run == "B" for f in read_rows(out / "strain_flags.parquet", StrainFlagRow))
