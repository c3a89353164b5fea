"""What a referee needs on the page: how the numbers were made, the study side by side,
and one view per material.

- The settings and checkpoints of the run's manifest are on both pages; runs pooled
  with different settings are refused, or reported under a warning when allowed.
- ``--study``: each published number of Gao & Wang 2025 stands next to ours for the same
  model and property (ours recomputed here from the pairs table).
- ``materials/<id>.html``: the 6x6 tensor next to DFT's, the fit residuals, and the
  stress-strain points per component, whose fitted slope is the tensor's C_jj.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from report_helpers import manifest_entry, write_run

from umlip_orchestrator.datasets import dataset_sha256
from umlip_orchestrator.report import ReportError, build_report
from umlip_orchestrator.report.materials import page_name
from umlip_orchestrator.report.study import default_study_path, load_study
from umlip_orchestrator.tables import ResultStore


def test_settings_and_checkpoints_are_on_both_pages(report_dir) -> None:
    _, _, files = report_dir
    summary = files.summary.read_text()
    page = files.index.read_text()
    assert summary.startswith("# umlip report: ") and "(relaxed ions, fmax 0.1 eV/Å)" in summary
    for text in (summary, page):
        assert "Settings and provenance" in text and "Models and checkpoints" in text
        for expected in ("relax.fmax", "relax.max_steps", "relax.fix_symmetry", "ion_mode",
                         "strains.normal", "-0.01, -0.005, 0.005, 0.01", "strains.shear",
                         "small-dejong.json", "alpha-checkpoint-v1", "01" * 32,
                         "torch 2.13.0+cpu", "120.0 s"):  # fmt: skip
            assert expected in text, expected
    assert 'id="table-provenance"' in page and 'id="warning"' not in page


def test_runs_with_different_settings_are_not_pooled_silently(
    small_materials, small_reference: Path, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", small_materials, {"alpha": 1.0})
    store = ResultStore(run)
    store.write_manifest(manifest_entry(small_reference, ["alpha"], fmax=0.1))
    store.write_manifest(manifest_entry(small_reference, ["alpha"], fmax=0.01))
    with pytest.raises(ReportError, match=r"relax\.fmax: 0\.1 vs 0\.01.*--allow-mixed-settings"):
        build_report(run, tmp_path / "refused", [small_reference])
    assert not (tmp_path / "refused" / "index.html").exists()
    _, files = build_report(run, tmp_path / "pooled", [small_reference], allow_mixed_settings=True)
    page, summary = files.index.read_text(), files.summary.read_text()
    assert 'id="warning"' in page and "relax.fmax: 0.1 vs 0.01" in page
    assert "> **Warning:** this report pools 2 runs" in summary
    assert "0.1 | 0.01" in summary  # the settings table shows both values


def test_a_dataset_is_known_by_its_digest_not_its_path(
    small_materials, small_reference: Path, tmp_path: Path
) -> None:
    """The same file read from two paths (a checkout, a container's installed package) is
    one dataset; another file under the same name is not."""
    copy = tmp_path / "elsewhere" / small_reference.name
    copy.parent.mkdir()
    copy.write_bytes(small_reference.read_bytes())
    edited = tmp_path / "edited" / small_reference.name
    edited.parent.mkdir()
    edited.write_bytes(small_reference.read_bytes() + b"\n")

    def entry(dataset: Path) -> dict:
        return {
            **manifest_entry(dataset, ["alpha"]),
            "run_id": str(dataset),  # one run each
            "dataset_sha256": dataset_sha256(dataset),
        }

    run = write_run(tmp_path / "same", small_materials, {"alpha": 1.0})
    ResultStore(run).write_manifest(entry(small_reference))
    ResultStore(run).write_manifest(entry(copy))
    _, files = build_report(run, tmp_path / "same-report", [small_reference])
    page = files.index.read_text()
    assert 'id="warning"' not in page
    assert "<td>runs into this folder</td><td>2</td>" in page  # two runs, pooled
    assert f"(sha256 {dataset_sha256(small_reference)[:12]})" in page

    other = write_run(tmp_path / "other", small_materials, {"alpha": 1.0})
    ResultStore(other).write_manifest(entry(small_reference))
    ResultStore(other).write_manifest(entry(edited))
    with pytest.raises(ReportError, match=r"dataset: .*sha256 .* vs .*edited"):
        build_report(other, tmp_path / "other-report", [small_reference])


def test_a_folder_dataset_digest_follows_the_files_it_reads(tmp_path: Path) -> None:
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "a.cif").write_text("data_a\n")
    (folder / "b.cif").write_text("data_b\n")
    first = dataset_sha256(folder)
    (folder / ".hidden").write_text("not read")
    assert dataset_sha256(folder) == first
    (folder / "b.cif").write_text("data_b changed\n")
    assert dataset_sha256(folder) != first
    (folder / "b.cif").rename(folder / "c.cif")
    assert len({first, dataset_sha256(folder)}) == 2


@pytest.fixture(scope="module")
def study_report(small_materials, small_reference: Path, tmp_path_factory):
    """A run of models named like the study's (chgnet, sevennet), reported with --study."""
    run = write_run(tmp_path_factory.mktemp("study-run"), small_materials,
                    {"chgnet": 0.8, "sevennet": 1.05})  # fmt: skip
    ResultStore(run).write_manifest(manifest_entry(small_reference, ["chgnet", "sevennet"]))
    out = tmp_path_factory.mktemp("study-report")
    analysis, files = build_report(run, out, [small_reference], with_study=True)
    return out, analysis, files


def test_the_study_is_shipped_as_published() -> None:
    shipped = json.loads(default_study_path().read_text())
    original = Path(__file__).resolve().parents[4] / "shared" / "data" / "study-gao-wang-2025.json"
    assert shipped == json.loads(original.read_text())
    assert load_study()["median_relative_error_pct"]["CHGNet"]["K_VRH"] == -2.61


def test_published_numbers_stand_next_to_ours(study_report) -> None:
    out, analysis, files = study_report
    rows = pq.read_table(out / "study.parquet").to_pylist()
    by = {(r["quantity"], r["study_model"], r["property"]): r for r in rows}
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()

    def ours(model: str, prop: str) -> list[float]:
        return [p["relative_error_pct"] for p in pairs
                if p["model"] == model and p["property"] == prop
                and math.isfinite(p["relative_error_pct"])]  # fmt: skip

    row = by[("median relative error (%)", "CHGNet", "K_VRH")]
    assert row["published"] == -2.61
    assert row["ours"] == pytest.approx(float(np.median(ours("chgnet", "k_vrh"))))
    assert row["our_model"] == "chgnet" and "chgnet-checkpoint-v1" in row["our_checkpoint"]
    row = by[("median relative error (%)", "SevenNet", "G_VRH")]
    assert row["published"] == 9.79
    assert row["ours"] == pytest.approx(float(np.median(ours("sevennet", "g_vrh"))))
    mace = by[("Pearson R", "MACE", "K_VRH")]
    assert mace["our_model"] == "(not in this run)" and math.isnan(mace["ours"])
    mape = by[("average MAPE, 8 properties (%)", "CHGNet", "")]
    assert mape["published"] == 71.8
    per_property = [m.mape_pct for m in analysis.metrics if m.model == "chgnet"]
    assert mape["ours"] == pytest.approx(float(np.mean(per_property)))
    accuracy = by[("Born-stability accuracy (%)", "SevenNet", "")]
    stability = next(s for s in analysis.stability if s.model == "sevennet")
    assert accuracy["published"] == 98.3 and accuracy["ours"] == pytest.approx(
        100 * stability.accuracy
    )
    dft_mean = by[("mean", "DFT", "K_VRH")]
    used = [r.k_vrh_gpa for r in analysis.reference if r.included and math.isfinite(r.k_vrh_gpa)]
    assert dft_mean["published"] == 104.1 and dft_mean["ours"] == pytest.approx(np.mean(used))
    summary = files.summary.read_text()
    assert (
        "## The study side by side" in summary
        and "The study does not name its checkpoints" in summary
    )


def test_each_material_has_a_page_with_its_tensor_fit_and_stress_strain_points(
    report_dir, run_dir: Path
) -> None:
    out, analysis, _ = report_dir
    results = pq.read_table(run_dir / "results.parquet").to_pylist()
    material_id = sorted(p.material_id for p in analysis.pairs)[0]
    page = (out / "materials" / page_name(material_id)).read_text()
    assert page.count('class="stress-strain"') == 2 * 6  # two models, six components
    assert page.count('class="point"') == 2 * 24
    assert f"{material_id} alpha: strain xx -0.01" in page  # hover text of a point
    assert "DFT C_ij (GPa)" in page and "fit RMS residual per C_ij" in page
    # Each chart's fitted slope is that model's C_jj from the results table.
    fitted = [float(v) for v in re.findall(r"C11 fit (-?[0-9.]+)", page)]
    tensors = {
        r["model"]: r["elastic_tensor_gpa"] for r in results if r["material_id"] == material_id
    }
    assert fitted == pytest.approx([tensors[m][0] for m in ("alpha", "beta")], abs=0.051)
    index = (out / "materials" / "index.html").read_text()
    assert index.count("<tr>") == len({r["material_id"] for r in results}) + 1


def test_unstable_materials_are_flagged_and_linked(report_dir) -> None:
    _, _, files = report_dir
    page = files.index.read_text()
    assert 'id="flagged"' in page
    flagged = page[page.index('id="table-flagged"') :]
    flagged = flagged[: flagged.index("</table>")]
    assert "not Born-stable: alpha, beta" in flagged  # material 7, unstable in every model
    assert "DFT tensor not Born-stable" in flagged
    assert 'href="materials/' in flagged


def test_compare_puts_the_published_finetuning_tables_next_to_ours() -> None:
    from umlip_orchestrator.report.compare import ALL, PropertyChange, study_tables
    from umlip_orchestrator.report.spec import PROPERTIES

    changes = [
        PropertyChange(
            model_a="chgnet", model_b="chgnet-ft-0123abcd", group=ALL, property=p.key,
            label=p.label, n_common=10, n_only_a=0, n_only_b=0, n_mape=10, mape_a_pct=20.0,
            mape_b_pct=10.0, mape_change_pct=-50.0, iqr_a_pct=30.0, iqr_b_pct=15.0,
            iqr_change_pct=-15.0, median_a_pct=1.0, median_b_pct=0.5,
        )
        for p in PROPERTIES
    ]  # fmt: skip
    text = study_tables(changes)
    table_1 = text[text.index("Table I:") : text.index("Table II:")]
    table_2 = text[text.index("Table II:") :]
    assert "published (Gao & Wang 2025)" in table_1
    assert "| K_VRH | -50 (10) | 11.8 |" in table_1  # the study's CHGNet K_VRH: +11.8 %
    assert "| nu | 30 -> 15 | 69.4 -> 29 |" in table_2
    other = study_tables([dataclasses.replace(c, model_a="emt") for c in changes])
    assert "published" not in other  # a model the study did not fine-tune
