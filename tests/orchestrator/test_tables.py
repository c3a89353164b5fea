"""Arrow schemas with units, the resumable ResultStore, the manifest and docs/tables.md."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from umlip_orchestrator.records import DeformationRecord, MaterialResult
from umlip_orchestrator.tables import (
    FIELD_INFO,
    RESULTS_SCHEMA,
    STRESSES_SCHEMA,
    ResultStore,
    records_to_table,
    schema_markdown,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def result(material_id: str, model: str = "emt", **changes: Any) -> MaterialResult:
    """A failed-relaxation row: most fields None."""
    row: dict[str, Any] = {f.name: None for f in dataclasses.fields(MaterialResult)}
    row.update(
        material_id=material_id,
        model=model,
        formula="Cu",
        n_atoms=1,
        status="failed",
        error="relaxation diverged",
        ion_mode="clamped",
        atomic_numbers=[29],
        wall_time_s=1.5,
        seconds_per_material=0.5,
    )
    row.update(changes)
    return MaterialResult(**row)


def ok_result(material_id: str, model: str = "emt", k: float = 140.0) -> MaterialResult:
    return result(
        material_id,
        model,
        status="ok",
        error=None,
        relax_converged=True,
        relax_steps=12,
        relaxed_energy_ev=-0.0057,
        relaxed_volume_a3=11.57,
        relaxed_cell_a=np.eye(3).reshape(-1) * 2.5,  # numpy input is accepted
        relaxed_positions_a=[0.0, 0.0, 0.0],
        n_deformations=2,
        deformations_converged=None,
        elastic_tensor_gpa=[float(i) for i in range(36)],
        k_vrh_gpa=np.float64(k),
        born_stable=True,
        reference_k_vrh_gpa=None,
    )


def stress(material_id: str, index: int, model: str = "emt", **changes: Any) -> DeformationRecord:
    row: dict[str, Any] = {
        "material_id": material_id,
        "model": model,
        "index": index,
        "component": index % 6,
        "magnitude": 0.01,
        "green_lagrange_strain": [0.01, 0, 0, 0, 0, 0, 0, 0, 0],
        "stress_gpa": [1.0, 2.0, 3.0, 0.0, 0.0, 0.0],
        "converged": None,
        "error": None,
    }
    row.update(changes)
    return DeformationRecord(**row)


def test_schemas_follow_the_dataclasses_with_units() -> None:
    for schema, record_type in (
        (RESULTS_SCHEMA, MaterialResult),
        (STRESSES_SCHEMA, DeformationRecord),
    ):
        assert schema.names == [f.name for f in dataclasses.fields(record_type)]
        for field in schema:
            assert b"unit" in field.metadata and field.metadata[b"description"]
            assert field.metadata[b"unit"].decode() == FIELD_INFO[field.name][0]
    r = RESULTS_SCHEMA
    assert r.field("k_vrh_gpa").metadata[b"unit"] == b"GPa"
    assert r.field("debye_temperature_k").metadata[b"unit"] == b"K"
    assert r.field("wall_time_s").metadata[b"unit"] == b"s"
    assert r.field("relaxed_cell_a").metadata[b"unit"] == "Å".encode()
    assert r.field("relaxed_energy_ev").metadata[b"unit"] == b"eV"
    assert r.field("poisson_ratio").metadata[b"unit"] == b"dimensionless"
    assert r.field("relaxed_cell_a").type.value_type == pa.float64()
    assert r.field("atomic_numbers").type.value_type == pa.int64()
    assert r.field("n_atoms").type == pa.int64() and not r.field("n_atoms").nullable
    assert r.field("status").type == pa.string() and not r.field("status").nullable
    assert r.field("error").nullable and r.field("born_stable").type == pa.bool_()
    assert STRESSES_SCHEMA.field("stress_gpa").metadata[b"unit"] == b"GPa"
    assert r.metadata[b"umlip.table"] == b"results"
    assert set(FIELD_INFO) == set(r.names) | set(STRESSES_SCHEMA.names)


def test_required_fields_and_row_types_are_checked() -> None:
    with pytest.raises(ValueError, match="formula"):
        records_to_table([result("a", formula=None)], "results")
    with pytest.raises(TypeError, match="MaterialResult"):
        records_to_table([stress("a", 0)], "results")


def test_round_trip_keeps_values_and_nones(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    rows = [ok_result("mp-2"), result("mp-1")]
    stresses = [stress("mp-2", 1), stress("mp-2", 0, stress_gpa=None, error="diverged")]
    store.write(rows, stresses)

    table = store.read_results()
    assert table.schema.equals(RESULTS_SCHEMA, check_metadata=True)
    got = table.to_pylist()
    assert [g["material_id"] for g in got] == ["mp-1", "mp-2"]  # sorted
    assert got[0] == dataclasses.asdict(rows[1])
    expected = dataclasses.asdict(rows[0])
    expected["relaxed_cell_a"] = expected["relaxed_cell_a"].tolist()
    assert got[1] == expected
    assert got[0]["k_vrh_gpa"] is None and got[1]["deformations_converged"] is None

    table = store.read_stresses()
    assert table.schema.equals(STRESSES_SCHEMA, check_metadata=True)
    assert table.to_pylist() == [dataclasses.asdict(s) for s in reversed(stresses)]
    assert table.to_pylist()[0]["stress_gpa"] is None


def test_parts_are_partitioned_by_model(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write([ok_result("a", "mace"), ok_result("a", "org/model")], [stress("a", 0, "mace")])
    parts = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert len(parts) == 3
    assert parts[0].startswith("parts/results/model=mace/part-")
    assert parts[1].startswith("parts/results/model=org%2Fmodel/part-")
    assert parts[2].startswith("parts/stresses/model=mace/part-")
    assert pq.read_table(tmp_path / parts[0]).num_rows == 1
    with pytest.raises(ValueError, match="without a results row"):
        store.write([ok_result("b")], [stress("c", 0)])


def test_resume_done_keys_ignore_temp_and_corrupt_files(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.done_keys() == set()
    store.write([ok_result("a"), result("b")], [stress("a", 0)])
    store.write([ok_result("a", "mace")], [])
    assert store.done_keys() == {("a", "emt"), ("b", "emt"), ("a", "mace")}

    model_dir = tmp_path / "parts" / "results" / "model=emt"
    leftover = model_dir / ".part-99999999999999999999-dead.parquet.0123.tmp"
    leftover.write_bytes(b"PAR1 half written")  # what a kill mid-write leaves
    corrupt = model_dir / "part-99999999999999999999-corrupt.parquet"
    corrupt.write_bytes(b"this is not parquet")
    assert store.done_keys() == {("a", "emt"), ("b", "emt"), ("a", "mace")}
    assert [p for p, _ in store.unreadable_parts] == [corrupt]
    assert store.read_results().num_rows == 3
    assert store.unreadable_parts and store.compact()[0].exists()


def test_compact_dedups_keeping_the_last_write_and_sorts(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write([result("c"), result("a")], [stress("a", 0), stress("a", 1)])
    store.write([ok_result("b"), ok_result("a", k=100.0)], [stress("a", 1), stress("b", 0)])
    store.write([ok_result("a", k=150.0), result("a", "mace")], [stress("a", 2)])
    results_path, stresses_path = store.compact()
    assert results_path == tmp_path / "results.parquet"

    results = pq.read_table(results_path)
    assert results.schema.equals(RESULTS_SCHEMA, check_metadata=True)
    keys = list(zip(results["material_id"].to_pylist(), results["model"].to_pylist(), strict=True))
    assert keys == [("a", "emt"), ("a", "mace"), ("b", "emt"), ("c", "emt")]
    assert results["k_vrh_gpa"].to_pylist()[0] == 150.0

    # Stresses of a key come from the write its kept results row came from.
    stresses = pq.read_table(stresses_path)
    assert list(
        zip(stresses["material_id"].to_pylist(), stresses["index"].to_pylist(), strict=True)
    ) == [
        ("a", 2),
        ("b", 0),
    ]

    # Compacting again (with the parts removed) gives the same tables, and resumes from them.
    store.compact(remove_parts=True)
    assert not list((tmp_path / "parts").rglob("*.parquet"))
    assert pq.read_table(results_path).equals(results)
    assert pq.read_table(stresses_path).equals(stresses)
    assert ("c", "emt") in store.done_keys()
    store.write([result("c", error="again")], [])
    again = store.read_results().filter(pc.field("material_id") == "c")
    assert again["error"].to_pylist() == ["again"]


def test_orphan_stresses_of_a_killed_write_are_dropped(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write([ok_result("a")], [stress("a", 0)])
    # A later write killed between its stresses part and its results part.
    orphan = pa.Table.from_pylist([dataclasses.asdict(stress("a", 5))], schema=STRESSES_SCHEMA)
    pq.write_table(
        orphan, tmp_path / "parts/stresses/model=emt/part-99999999999999999999-x.parquet"
    )
    assert store.read_stresses()["index"].to_pylist() == [0]


def test_old_parts_without_a_new_nullable_column_still_read(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    old = records_to_table([ok_result("a")], "results").drop_columns(["pugh_ratio"])
    path = tmp_path / "parts/results/model=emt/part-00000000000000000001-old.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(old, path)
    table = store.read_results()
    assert table.num_rows == 1 and table["pugh_ratio"].to_pylist() == [None]


def test_manifest_history_appends_and_updates(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.read_manifest()["runs"] == []
    store.write_manifest({"run_id": "r1", "dataset": Path("/data/set.json"), "limit": 5})
    store.write_manifest({"dataset": "/data/set.json", "limit": np.int64(10)})
    store.write_manifest({"run_id": "r1", "dataset": "/data/set.json", "finished": True})
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == store.read_manifest()
    runs = manifest["runs"]
    assert len(runs) == 2
    assert runs[0]["run_id"] == "r1" and runs[0]["finished"] is True
    assert runs[1]["limit"] == 10 and "written_at" in runs[1]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(TypeError, match="JSON"):
        store.write_manifest({"bad": object()})
    assert len(store.read_manifest()["runs"]) == 2  # a failed write leaves the file intact


def test_docs_tables_md_matches_the_schemas() -> None:
    docs = (REPO_ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert docs == schema_markdown(), (
        "regenerate: python -m umlip_orchestrator.tables > docs/tables.md"
    )
    assert "| `k_vrh_gpa` | double | yes | GPa |" in docs
