"""``umlip report`` and ``umlip compare`` on hand-built runs: files, values, errors."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pymatgen.analysis.elasticity import ElasticTensor
from report_helpers import write_run
from scipy.stats import pearsonr
from sklearn.metrics import confusion_matrix, f1_score

from umlip_orchestrator.cli import main
from umlip_orchestrator.report import REPORT_TABLES, PropertyChange, ReportError
from umlip_orchestrator.report.analysis import PropertyMetrics, StabilityRow
from umlip_orchestrator.report.compare import pair_models
from umlip_orchestrator.report.io import read_rows
from umlip_orchestrator.report.spec import PROPERTIES

FIGURES = [
    "mape_heatmap",
    *(f"parity_{p.key}" for p in PROPERTIES),
    "violins",
    "relative_errors",
    "stability_confusion",
    "stability_agreement",
    "timing",
]


def dft_values(reference: Path) -> dict[str, tuple[float, float, bool]]:
    """(K_VRH, G_VRH, Born-stable) of each entry with a tensor, by pymatgen and numpy."""
    values = {}
    for entry in json.loads(reference.read_text(encoding="utf-8")):
        c = entry.get("elastic_tensor_original")
        if c is None:
            continue
        tensor = ElasticTensor.from_voigt(c)
        stable = bool(np.linalg.eigvalsh((np.array(c) + np.array(c).T) / 2).min() > 0)
        values[entry["material_id"]] = (tensor.k_vrh, tensor.g_vrh, stable)
    return values


def test_report_writes_every_table_and_figure(report_dir) -> None:
    out, _, files = report_dir
    for name, row_type in REPORT_TABLES.items():
        assert (out / name).is_file(), name
        assert len(read_rows(out / name, row_type)) > 0, name
    assert len(read_rows(out / "metrics.parquet", PropertyMetrics)) == 2 * len(PROPERTIES)
    assert pq.read_schema(out / "metrics.parquet").field("mape_pct").metadata[b"unit"] == b"%"
    for stem in FIGURES:
        png, svg = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert png.stat().st_size > 5000, stem
        assert b"<svg" in svg.read_bytes()[:2000], stem
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{s}.{e}" for s in FIGURES for e in ("png", "svg")
    )
    assert set(files.figures) == {
        out / "figures" / f"{s}.{e}" for s in FIGURES for e in ("png", "svg")
    }
    summary = (out / "summary.md").read_text(encoding="utf-8")
    for heading in ("## Overview", "## MAPE (%)", "## Errors against DFT", "## Born stability",
                    "## Stability agreement", "## Cost", "## Figures"):  # fmt: skip
        assert heading in summary
    page = (out / "index.html").read_text(encoding="utf-8")
    for stem in FIGURES:
        # Parity plots are inline SVG (hover titles); each figure links its PNG and SVG.
        assert f'href="figures/{stem}.png"' in page and f'href="figures/{stem}.svg"' in page
        assert (f'src="figures/{stem}.png"' in page) is not stem.startswith("parity_"), stem


def test_report_values_match_an_independent_computation(report_dir, run_dir, small_reference):
    _, analysis, _ = report_dir
    results = pq.read_table(run_dir / "results.parquet").to_pylist()
    dft = dft_values(small_reference)
    metrics = {(m.model, m.property): m for m in analysis.metrics}
    for model in ("alpha", "beta"):
        rows = [r for r in results if r["model"] == model]
        for index, key, column in ((0, "k_vrh", "k_vrh_gpa"), (1, "g_vrh", "g_vrh_gpa")):
            scoped = [r for r in rows if r["material_id"] in dft and dft[r["material_id"]][2]]
            pairs = [
                (r[column], dft[r["material_id"]][index]) for r in scoped if r["status"] == "ok"
            ]
            pred, ref = zip(*pairs, strict=True)
            rel = [100 * (p - f) / abs(f) for p, f in pairs]
            m = metrics[(model, key)]
            assert m.n == len(pairs)
            assert m.n_failed == sum(r["status"] == "failed" for r in scoped)
            assert m.n_skipped == sum(r["status"] == "skipped" for r in scoped)
            assert m.mae == pytest.approx(statistics.fmean(abs(p - f) for p, f in pairs))
            assert m.pearson_r == pytest.approx(pearsonr(pred, ref).statistic)
            assert m.mape_pct == pytest.approx(statistics.fmean(abs(x) for x in rel))
            assert m.rel_median_pct == pytest.approx(statistics.median(rel))
            assert m.mean_dft == pytest.approx(statistics.fmean(ref))
        called = [r for r in rows if r["material_id"] in dft and r["status"] == "ok"]
        truth = [dft[r["material_id"]][2] for r in called]
        calls = [r["born_stable"] for r in called]
        scores = next(s for s in analysis.stability if s.model == model)
        tn, fp, fn, tp = confusion_matrix(truth, calls, labels=[False, True]).ravel()
        assert (scores.tp, scores.fp, scores.fn, scores.tn) == (tp, fp, fn, tn)
        assert scores.f1 == pytest.approx(f1_score(truth, calls))
    assert (analysis.overview.n_dft_unstable_removed, analysis.overview.n_no_reference_values) == (
        1,
        1,
    )
    assert analysis.overview.n_used == 22
    au = metrics[("alpha", "universal_anisotropy")]
    assert au.n == 22 and math.isfinite(au.mape_pct)  # a full-tensor reference gives A_U


def test_cli_report_with_the_default_reference(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--epsilon", "k_vrh=2"]) == 0
    assert "report in" in capsys.readouterr().out
    metrics = {
        (m.model, m.property): m for m in read_rows(out / "metrics.parquet", PropertyMetrics)
    }
    assert metrics[("alpha", "k_vrh")].epsilon == 2.0
    assert metrics[("alpha", "universal_anisotropy")].n == 0  # K and G only: no A_U
    assert math.isnan(metrics[("alpha", "cauchy_pressure")].mape_pct)
    assert metrics[("alpha", "debye_temperature")].n > 0  # structures from the run's dataset
    assert read_rows(out / "stability.parquet", StabilityRow) == []
    assert not (out / "figures" / "parity_universal_anisotropy.png").exists()
    assert (out / "figures" / "parity_debye_temperature.png").exists()
    assert "no DFT elastic tensors" in (out / "summary.md").read_text(encoding="utf-8")
    results = pq.read_table(run_dir / "results.parquet").to_pylist()
    reference = {r["material_id"]: r for r in pq.read_table(out / "reference.parquet").to_pylist()}
    for row in results:
        if row["reference_k_vrh_gpa"] is not None:
            assert reference[row["material_id"]]["k_vrh_gpa"] == row["reference_k_vrh_gpa"]


def test_cli_compare_against_an_independent_computation(
    run_dir: Path, small_materials, small_reference: Path, tmp_path: Path
) -> None:
    run_b = write_run(tmp_path / "b", small_materials, {"alpha": 1.0, "beta": 0.95}, noise=0.02)
    out = tmp_path / "compare"
    args = [
        "compare",
        str(run_dir),
        str(run_b),
        "--out",
        str(out),
        "--reference",
        str(small_reference),
    ]
    assert main(args) == 0
    changes = read_rows(out / "compare.parquet", PropertyChange)
    assert len(changes) == 2 * len(PROPERTIES)
    assert (out / "compare.md").is_file() and (out / "figures" / "compare.png").is_file()
    assert (out / "figures" / "compare.svg").is_file()
    dft = dft_values(small_reference)
    runs = [pq.read_table(d / "results.parquet").to_pylist() for d in (run_dir, run_b)]
    for model in ("alpha", "beta"):
        value = [
            {
                r["material_id"]: r["k_vrh_gpa"]
                for r in rows
                if r["model"] == model and r["status"] == "ok"
            }
            for rows in runs
        ]
        common = [m for m in value[0].keys() & value[1].keys() if m in dft and dft[m][2]]
        mape = [
            statistics.fmean(100 * abs(v[m] - dft[m][0]) / dft[m][0] for m in common) for v in value
        ]
        rel = [[100 * (v[m] - dft[m][0]) / dft[m][0] for m in common] for v in value]
        iqr = [np.subtract(*statistics.quantiles(r, n=4, method="inclusive")[::-2]) for r in rel]
        change = next(c for c in changes if c.model_a == model and c.property == "k_vrh")
        assert change.n_common == len(common)
        assert change.mape_a_pct == pytest.approx(mape[0])
        assert change.mape_b_pct == pytest.approx(mape[1])
        assert change.mape_change_pct == pytest.approx(100 * (mape[1] - mape[0]) / mape[0])
        assert change.iqr_a_pct == pytest.approx(iqr[0])
        assert change.iqr_b_pct == pytest.approx(iqr[1])


def test_model_pairing_rules() -> None:
    assert pair_models(["mace"], ["mace-ft"]) == [("mace", "mace-ft")]
    assert pair_models(["a", "b"], ["b", "c"]) == [("b", "b")]
    assert pair_models(["a", "b"], ["c", "d"], {"a": "d"}) == [("a", "d")]
    finetuned = ["chgnet-ft-0a1b2c3d", "sevennet-ft-99887766"]
    assert pair_models(["chgnet", "sevennet", "mace"], finetuned) == [
        ("chgnet", "chgnet-ft-0a1b2c3d"),
        ("sevennet", "sevennet-ft-99887766"),
    ]
    with pytest.raises(ReportError, match="no model in common"):
        pair_models(["a", "b"], ["c", "d"])
    with pytest.raises(ReportError, match="cannot pair"):
        pair_models(["a"], ["c"], {"x": "c"})


def test_cli_errors_are_one_line_with_exit_code_2(
    run_dir: Path, small_reference: Path, tmp_path: Path, capsys
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt_run = tmp_path / "corrupt"
    corrupt_run.mkdir()
    (corrupt_run / "results.parquet").write_bytes(b"PAR1 not really")
    bad_reference = tmp_path / "bad.json.gz"
    bad_reference.write_bytes(b"\x1f\x8b truncated")
    out = str(tmp_path / "out")
    cases = [
        (["report", str(tmp_path / "missing"), "--out", out], "does not exist"),
        (["report", str(empty), "--out", out], "has no results.parquet"),
        (["report", str(corrupt_run), "--out", out], "unreadable"),
        (["report", str(run_dir), "--out", out, "--reference", str(bad_reference)],
         "unreadable reference"),
        (["report", str(run_dir), "--out", out, "--reference", str(tmp_path / "nope.json")],
         "unreadable reference"),
        (["report", str(run_dir), "--out", out, "--epsilon", "bogus=1"], "unknown property"),
        (["compare", str(run_dir), str(empty), "--out", out], "has no results.parquet"),
        (["compare", str(run_dir), str(run_dir), "--out", out, "--pair", "x=y"], "cannot pair"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, captured.err)
        assert lines[0].startswith(f"umlip {argv[0]}: ")
        assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out" / "index.html").exists()
