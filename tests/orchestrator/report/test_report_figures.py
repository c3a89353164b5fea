"""The report's figures: outlier-robust axes, Born-unstable markers, point links in the
SVG, the stability confusion matrices and the annotated MAPE/MdAPE heat map.

Text is drawn as paths in the SVG; matplotlib keeps each string as an XML comment
beside its glyphs, which is what the text checks read.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from umlip_orchestrator.report.analysis import Analysis, analyse
from umlip_orchestrator.report.figures import (
    UNSTABLE_LABEL,
    bulk_limits,
    draw_all,
    mape_heatmap,
    material_href,
    parity,
    stability_confusion,
    violins,
)
from umlip_orchestrator.report.reference import ReferenceRow, ReferenceSet
from umlip_orchestrator.report.spec import PROPERTIES, PROPERTY_BY_KEY

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
N_MATERIALS = 12
#: The material model "alpha" calls Born-unstable, with an outlier G of 577 GPa.
UNSTABLE_ID = "mp-3"
#: The material model "beta" calls Born-unstable, with an ordinary G.
BETA_UNSTABLE_ID = "mp-5"
G_VRH = PROPERTY_BY_KEY["g_vrh"]


def _reference_row(material_id: str, k: float, g: float, stable: bool | None) -> ReferenceRow:
    values = {p.column: math.nan for p in PROPERTIES}
    values |= {"k_vrh_gpa": k, "g_vrh_gpa": g, "universal_anisotropy": 0.1 + 0.01 * k / 10}
    values |= {"cauchy_pressure_gpa": g / 5 - 10.0}
    return ReferenceRow(
        material_id=material_id,
        formula="X",
        source="tensor" if stable is not None else "moduli",
        dft_stable=stable,
        included=True,
        exclusion=None,
        **values,
    )


def _row(material_id: str, model: str, born_stable: bool, **values: float) -> dict[str, Any]:
    row: dict[str, Any] = {p.column: None for p in PROPERTIES}
    return row | {
        "material_id": material_id,
        "model": model,
        "formula": "X",
        "status": "ok",
        "seconds_per_material": 1.0,
        "wall_time_s": 2.0,
        "born_stable": born_stable,
        **values,
    }


def small_analysis(*, tensors: bool = True) -> Analysis:
    """Two models over 12 materials; alpha calls mp-3 unstable and predicts G = 577 GPa,
    beta calls mp-5 unstable (its values ordinary)."""
    rng = np.random.default_rng(3)
    references, rows = [], []
    for i in range(N_MATERIALS):
        material_id = f"mp-{i}"
        k, g = 50.0 + 15.0 * i, 20.0 + 8.0 * i
        references.append(_reference_row(material_id, k, g, True if tensors else None))
        for model, scale in (("alpha", 1.05), ("beta", 0.95)):
            noise = 1.0 + 0.03 * rng.standard_normal(2)
            values = {"k_vrh_gpa": scale * k * noise[0], "g_vrh_gpa": scale * g * noise[1]}
            values |= {"universal_anisotropy": 0.3, "cauchy_pressure_gpa": g / 4 - 10.0}
            unstable = model == "alpha" and material_id == UNSTABLE_ID
            if unstable:
                values["g_vrh_gpa"] = 577.0
            unstable |= model == "beta" and material_id == BETA_UNSTABLE_ID
            rows.append(_row(material_id, model, not unstable, **values))
    return analyse(rows, ReferenceSet(name="small", rows=tuple(references)))


def _comments(svg: Path) -> list[str]:
    return [c.strip() for c in re.findall(r"<!--(.*?)-->", svg.read_text(encoding="utf-8"), re.S)]


def _links(element: ET.Element) -> list[str]:
    return [a.attrib[XLINK_HREF] for a in element.iter(f"{SVG}a")]


def _group(root: ET.Element, gid: str) -> ET.Element:
    (group,) = [g for g in root.iter(f"{SVG}g") if g.attrib.get("id") == gid]
    return group


def test_bulk_limits_leave_out_an_outlier_and_keep_ordinary_extremes() -> None:
    values = np.r_[np.linspace(10.0, 200.0, 40), 2000.0, np.nan]
    low, high = bulk_limits(values)
    assert low < 10.0 and 200.0 < high < 2000.0
    plain = np.linspace(10.0, 200.0, 40)
    low, high = bulk_limits(plain)  # no outlier: every value inside, 5 % padding
    assert low == pytest.approx(10.0 - 0.05 * 190) and high == pytest.approx(200.0 + 0.05 * 190)
    assert bulk_limits([]) == (0.0, 1.0)
    low, high = bulk_limits([3.0, 3.0])
    assert low < 3.0 < high


def test_parity_marks_unstable_points_links_every_point_and_counts_the_outside(
    tmp_path: Path,
) -> None:
    analysis = small_analysis()
    figure = parity(analysis, G_VRH, tmp_path)
    assert figure is not None and figure.stem == "parity_g_vrh"
    assert figure.files == ("figures/parity_g_vrh.png", "figures/parity_g_vrh.svg")
    assert "outside" in figure.caption and UNSTABLE_LABEL in figure.caption
    svg = tmp_path / figure.files[1]
    root = ET.parse(svg).getroot()

    # One link per plotted point, in the order of the points, in its model's group.
    for index, model in enumerate(analysis.models):
        points = [
            p
            for p in analysis.pairs
            if p.model == model and p.property == "g_vrh" and math.isfinite(p.predicted)
        ]
        assert len(points) == N_MATERIALS
        stable = [material_href(p.material_id, model) for p in points if p.model_born_stable]
        unstable = [material_href(p.material_id, model) for p in points if not p.model_born_stable]
        assert _links(_group(root, f"stable-points-{index}")) == stable
        if unstable:
            assert _links(_group(root, f"unstable-points-{index}")) == unstable
        else:
            assert not [
                g for g in root.iter(f"{SVG}g") if g.attrib.get("id") == f"unstable-points-{index}"
            ]
    assert _links(_group(root, "unstable-points-0")) == [
        f"materials/{UNSTABLE_ID}.html#model-{analysis.models[0]}"
    ]
    beta_unstable = _group(root, "unstable-points-1")
    assert _links(beta_unstable) == [f"materials/{BETA_UNSTABLE_ID}.html#model-beta"]
    # The distinct marker: a red cross, drawn inside beta's link (its point is in the axes).
    marker = ET.tostring(beta_unstable, encoding="unicode")
    assert "#d62728" in marker and "#d62728" not in ET.tostring(
        _group(root, "stable-points-1"), encoding="unicode"
    )
    (link,) = beta_unstable.iter(f"{SVG}a")
    assert len(list(link.iter(f"{SVG}use"))) == 1
    assert len(_links(root)) == 2 * N_MATERIALS
    assert 'target="_blank"' not in svg.read_text(encoding="utf-8")

    # The outlier (G = 577 GPa) does not set the axes: it is counted outside them.
    comments = _comments(svg)
    assert comments.count("1 point outside the axes") == 1  # alpha's panel
    assert comments.count("0 points outside the axes") == 1  # beta's panel
    assert comments.count(f"{UNSTABLE_LABEL} (1)") == 2  # one legend per panel
    assert "(1 in all)" in figure.caption
    assert (tmp_path / figure.files[0]).read_bytes()[:4] == b"\x89PNG"


def test_violins_count_the_values_outside_their_axis(tmp_path: Path) -> None:
    figure = violins(small_analysis(), tmp_path)
    assert figure is not None and "outside" in figure.caption
    comments = _comments(tmp_path / figure.files[1])
    assert "G_VRH (GPa): 1 value outside the axes" in comments
    assert "K_VRH (GPa): 0 values outside the axes" in comments


def test_stability_confusion_matrices(tmp_path: Path) -> None:
    analysis = small_analysis()
    figure = stability_confusion(analysis, tmp_path)
    assert figure is not None and figure.stem == "stability_confusion"
    for name in figure.files:
        assert (tmp_path / name).is_file()
    comments = _comments(tmp_path / figure.files[1])
    rows = {r.model: r for r in analysis.stability}
    for row in rows.values():  # each model calls one DFT-stable material unstable
        assert (row.tp, row.fn, row.fp, row.tn) == (11, 1, 0, 0)
    for role in ("(tp)", "(fn)", "(fp)", "(tn)"):
        assert comments.count(role) == 2
    # alpha's cells, then beta's (tp, fn, fp, tn), each count above its role.
    counts = [
        comments[i - 1] for i, c in enumerate(comments) if c in ("(tp)", "(fn)", "(fp)", "(tn)")
    ]
    assert counts == ["11", "1", "0", "0", "11", "1", "0", "0"]
    assert f"accuracy {rows['alpha'].accuracy:.2f} (n=12)" in comments
    assert "alpha" in comments and "beta" in comments
    # No DFT tensor, no stability calls: no figure.
    assert stability_confusion(small_analysis(tensors=False), tmp_path / "none") is None


def _cell(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def test_heatmap_annotates_every_cell_with_mape_and_mdape(tmp_path: Path) -> None:
    analysis = small_analysis()
    figure = mape_heatmap(analysis, tmp_path)
    assert figure is not None
    comments = _comments(tmp_path / figure.files[1])
    assert "MAPE (%) vs DFT" in comments and "MdAPE (%) vs DFT" in comments
    for metrics in analysis.metrics:
        for value in (metrics.mape_pct, metrics.mdape_pct):
            assert _cell(value) in comments, (metrics.model, metrics.property)
    for average in analysis.averages:
        assert _cell(average.average_mape_pct) in comments
        assert _cell(average.average_mape_without_near_zero_pct) in comments
        assert _cell(average.average_mdape_pct) in comments
    assert "average" in comments


def test_draw_all_includes_the_new_figures(tmp_path: Path) -> None:
    stems = [f.stem for f in draw_all(small_analysis(), tmp_path)]
    assert "stability_confusion" in stems and "parity_g_vrh" in stems
    assert stems[0] == "mape_heatmap"
