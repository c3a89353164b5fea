"""End to end, as a user would: benchmark CHGNet (real 0.3.0 weights, real service
process, real Ray) -> ``umlip finetune select`` the worst materials -> label their
configurations (here with ASE's EMT as an independent reference, so the label source is
``model:emt``, never DFT) -> ``umlip finetune label`` -> ``umlip finetune run`` (CHGNet's
own trainer in its own environment) -> benchmark the fine-tuned checkpoint through the
local launcher (``--checkpoint``) -> ``umlip compare`` with the study's two tables in
trained, held-out and forgetting columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from shared_data import DE_JONG, load_json_gz

from umlip_orchestrator.cli import main
from umlip_wire.process import ServiceProcess

#: Small de Jong materials made of elements EMT describes (DFT tensors in the set).
MATERIALS = ("mp-522", "mp-1487", "mp-829", "mp-644311", "mp-10597", "mp-12794")
RUN_FLAGS = ["--no-progress", "--group-size", "3"]


def _umlip(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "umlip_orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries = [e for e in load_json_gz(DE_JONG) if e["material_id"] in MATERIALS]
    assert len(entries) == len(MATERIALS)
    path = tmp_path_factory.mktemp("data") / "de-jong-emt6.json"
    path.write_text(json.dumps(entries))
    return path


def test_select_label_finetune_serve_rebenchmark_compare(
    dataset: Path, chgnet_python: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chgnet = chgnet_python
    before, after = tmp_path / "before", tmp_path / "after"
    with ServiceProcess(python=chgnet, module="umlip_chgnet", start_timeout_s=300) as service:
        _umlip("run", "--service", f"chgnet={service.target}", "--dataset", str(dataset),
               "--out", str(before), *RUN_FLAGS)  # fmt: skip

    selection = tmp_path / "selection"
    assert main(["finetune", "select", str(before), "--model", "chgnet", "--worst", "4",
                 "--out", str(selection)]) == 0  # fmt: skip
    record = json.loads((selection / "selection.json").read_text())
    assert len(record["train_materials"]) == 3 and len(record["held_out_materials"]) == 1
    errors = [m["relative_error_pct"] for m in record["materials"]]
    assert errors == sorted(errors, reverse=True)
    configs = read(selection / "configurations.xyz", index=":")
    assert {c.info["material_id"] for c in configs} == set(record["train_materials"])
    assert len(list((selection / "poscar").glob("*/POSCAR"))) == len(configs)

    assert main(["finetune", "label", str(selection)]) == 2  # no labels: says what to supply
    assert "compute energies, forces and stresses" in capsys.readouterr().err
    labels = []
    for config in configs:
        config.calc = EMT()
        energy, forces, stress = (
            config.get_potential_energy(),
            config.get_forces(),
            config.get_stress(),
        )
        config.calc = SinglePointCalculator(config, energy=energy, forces=forces, stress=stress)
        labels.append(config)
    write(tmp_path / "emt-labels.xyz", labels, format="extxyz")
    assert main(["finetune", "label", str(selection), "--labels", str(tmp_path / "emt-labels.xyz"),
                 "--label-source", "model:emt"]) == 0  # fmt: skip
    training = read(selection / "training.xyz", index=":")
    assert len(training) == len(configs)
    assert {f.info["label_source"] for f in training} == {"model:emt"}

    checkpoint = tmp_path / "chgnet-ft"
    _umlip("finetune", "run", "--model", "chgnet", "--train", str(selection / "training.xyz"),
           "--out", str(checkpoint), "--epochs", "2", "--batch-size", "8")  # fmt: skip
    provenance = json.loads((checkpoint / "provenance.json").read_text())
    assert provenance["label_source"] == "model:emt"
    assert sorted(provenance["trained_materials"]) == sorted(record["train_materials"])

    _umlip("run", "--models", "chgnet", "--checkpoint", f"chgnet={checkpoint}",
           "--dataset", str(dataset), "--out", str(after), *RUN_FLAGS)  # fmt: skip
    models = set(pq.read_table(after / "results.parquet")["model"].to_pylist())
    assert models == {provenance["model_name"]}

    result = _umlip("compare", str(before), str(after), "--selection", str(selection),
                    "--out", str(tmp_path / "compare"))  # fmt: skip
    assert "label_source=model:emt (not DFT labels)" in result.stdout
    text = (tmp_path / "compare" / "compare.md").read_text()
    assert "Table I" in text and "Table II" in text
    rows = pq.read_table(tmp_path / "compare" / "compare.parquet").to_pylist()
    by_group = {(r["group"], r["property"]): r for r in rows}
    assert by_group[("trained", "k_vrh")]["n_common"] == 3
    assert by_group[("held_out", "k_vrh")]["n_common"] == 1
    assert by_group[("forgetting", "k_vrh")]["n_common"] == 2
    assert by_group[("all", "k_vrh")]["n_common"] == 6
    assert {r["model_b"] for r in rows} == {provenance["model_name"]}

    # The report of the fine-tuned run names its base checkpoint and its label source.
    assert main(["report", str(after), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"{provenance['model_name']}: fine-tuned from 0.3.0" in summary
    assert "label_source=model:emt (not DFT labels)" in summary
