"""load_dataset on the bundled DFT sets, on structure files and on broken inputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from pymatgen.core import Lattice, Structure
from shared_data import DE_JONG, MP_BINARY

from umlip_orchestrator.datasets import (
    DatasetError,
    DatasetProblem,
    Material,
    load_dataset,
    sample_dataset,
)


def _first_entries(path: Path, n: int) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)[:n]


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _nacl_dict() -> dict[str, Any]:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()


def _disordered_dict() -> dict[str, Any]:
    structure = Structure(
        Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return structure.as_dict()


def test_mp_binary_set_reads_every_material_with_moduli() -> None:
    materials, problems = load_dataset(MP_BINARY)
    assert problems == []
    assert len(materials) == 3953
    first = _first_entries(MP_BINARY, 1)[0]
    m = materials[0]
    assert m.material_id == first["mp_id"] == "mp-975512"
    assert m.formula == first["formula"]
    assert m.reference_k_vrh_gpa == pytest.approx(first["bulk_modulus_vrh"])
    assert m.reference_g_vrh_gpa == pytest.approx(first["shear_modulus_vrh"])
    assert m.reference_tensor_gpa is None
    assert all(m.atoms.pbc) and len(m.atoms) == len(first["structure"]["sites"])
    assert m.atoms.calc is None and not m.atoms.constraints
    assert len({x.material_id for x in materials}) == len(materials)


def test_de_jong_set_carries_the_full_tensor() -> None:
    materials, problems = load_dataset(DE_JONG)
    assert problems == []
    assert len(materials) == 1181
    first = _first_entries(DE_JONG, 1)[0]
    m = materials[0]
    assert m.material_id == first["material_id"]
    assert m.reference_k_vrh_gpa == pytest.approx(first["K_VRH"])
    assert m.reference_g_vrh_gpa == pytest.approx(first["G_VRH"])
    assert m.reference_tensor_gpa is not None
    assert m.reference_tensor_gpa.shape == (6, 6)
    np.testing.assert_allclose(m.reference_tensor_gpa, first["elastic_tensor_original"])
    assert not m.reference_tensor_gpa.flags.writeable
    assert len(m.atoms) == first["nsites"]
    assert m.atoms.get_volume() == pytest.approx(first["volume"], rel=1e-6)


def test_limit_takes_the_first_materials() -> None:
    materials, problems = load_dataset(DE_JONG, limit=3)
    ids = [e["material_id"] for e in _first_entries(DE_JONG, 3)]
    assert [m.material_id for m in materials] == ids
    assert problems == []
    assert load_dataset(DE_JONG, limit=0) == ([], [])
    with pytest.raises(ValueError, match="limit"):
        load_dataset(DE_JONG, limit=-1)


def test_plain_json_with_ids_from_index_and_pymatgen_formula(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "set.json", [{"structure": _nacl_dict()}, _nacl_dict()])
    materials, problems = load_dataset(path)
    assert problems == []
    assert [m.material_id for m in materials] == ["0", "1"]
    assert materials[0].formula == "NaCl"
    assert materials[0].reference_k_vrh_gpa is None


def test_cif_poscar_and_multiframe_extxyz(tmp_path: Path) -> None:
    write(tmp_path / "Cu.cif", bulk("Cu", "fcc", a=3.6))
    write(tmp_path / "POSCAR", bulk("Si", "diamond", a=5.43), format="vasp")
    frames = [bulk("Al", "fcc", a=a) for a in (4.0, 4.05, 4.1)]
    write(tmp_path / "al.extxyz", frames)

    cu, problems = load_dataset(tmp_path / "Cu.cif")
    assert problems == [] and [m.material_id for m in cu] == ["Cu"]
    assert cu[0].formula == "Cu" and cu[0].atoms.cell.lengths() == pytest.approx([2.5456] * 3, 1e-4)

    si, _ = load_dataset(tmp_path / "POSCAR")
    assert si[0].material_id == "POSCAR" and si[0].formula == "Si" and len(si[0].atoms) == 2

    al, problems = load_dataset(tmp_path / "al.extxyz")
    assert problems == []
    assert [m.material_id for m in al] == ["al#0", "al#1", "al#2"]
    volumes = [m.atoms.get_volume() for m in al]
    assert volumes == pytest.approx([a**3 / 4 for a in (4.0, 4.05, 4.1)])


def test_directory_mixes_good_files_and_problems(tmp_path: Path) -> None:
    write(tmp_path / "b_cu.cif", bulk("Cu", "fcc", a=3.6))
    write(tmp_path / "a_si.vasp", bulk("Si", "diamond", a=5.43), format="vasp")
    (tmp_path / "notes.txt").write_text("this is not a structure\n", encoding="utf-8")
    (tmp_path / "broken.json").write_text("[{", encoding="utf-8")
    _write_json(tmp_path / "c_set.json", [{"id": "nacl", "structure": _nacl_dict()}])
    (tmp_path / ".hidden").write_text("ignored", encoding="utf-8")

    materials, problems = load_dataset(tmp_path)
    assert [m.material_id for m in materials] == ["a_si", "b_cu", "nacl"]
    assert {p.source for p in problems} == {"broken.json", "notes.txt"}
    for problem in problems:
        assert isinstance(problem, DatasetProblem) and problem.message
        assert "Traceback" not in problem.message

    first_two, _ = load_dataset(tmp_path, limit=2)
    assert [m.material_id for m in first_two] == ["a_si", "b_cu"]


def test_bad_json_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    materials, problems = load_dataset(path)
    assert materials == []
    assert len(problems) == 1 and problems[0].source == "bad.json"
    assert "JSON" in problems[0].message

    gz = tmp_path / "bad.json.gz"
    gz.write_bytes(b"not gzip at all")
    assert load_dataset(gz)[1][0].source == "bad.json.gz"

    top = _write_json(tmp_path / "dict.json", {"a": 1})
    assert "expected a list" in load_dataset(top)[1][0].message


def test_bad_entries_become_problems_naming_the_entry(tmp_path: Path) -> None:
    entries = [
        {"mp_id": "mp-ok", "structure": _nacl_dict(), "bulk_modulus_vrh": 25.0},
        {"mp_id": "mp-disordered", "structure": _disordered_dict()},
        {"mp_id": "mp-nostructure", "formula": "X"},
        {"mp_id": "mp-badstructure", "structure": {"lattice": "nope", "sites": []}},
        {"mp_id": "mp-badtensor", "structure": _nacl_dict(), "elastic_tensor": [[1, 2], [3, 4]]},
        {"mp_id": "mp-badmodulus", "structure": _nacl_dict(), "K_VRH": "big"},
        "not an object",
        {"mp_id": "mp-ok", "structure": _nacl_dict()},
    ]
    materials, problems = load_dataset(_write_json(tmp_path / "set.json", entries))
    assert [m.material_id for m in materials] == ["mp-ok"]
    assert materials[0].reference_k_vrh_gpa == 25.0
    by_source = {p.source: p.message for p in problems}
    assert "disordered" in by_source["set.json[1] (mp-disordered)"]
    assert "no 'structure'" in by_source["set.json[2] (mp-nostructure)"]
    assert "not a valid pymatgen Structure" in by_source["set.json[3] (mp-badstructure)"]
    assert "(6, 6)" in by_source["set.json[4] (mp-badtensor)"]
    assert "not a number" in by_source["set.json[5] (mp-badmodulus)"]
    assert "not a JSON object" in by_source["set.json[6]"]
    assert "duplicate material id 'mp-ok'" in by_source["set.json[7] (mp-ok)"]
    assert len(problems) == 7


def test_disordered_cif_and_non_periodic_xyz_are_problems(tmp_path: Path) -> None:
    Structure.from_dict(_disordered_dict()).to(filename=str(tmp_path / "alloy.cif"))
    write(tmp_path / "molecule.xyz", bulk("Cu", "fcc", a=3.6, cubic=True), format="xyz")
    _, problems = load_dataset(tmp_path)
    messages = {p.source.split(" ")[0]: p.message for p in problems}
    assert "partial occupancy" in messages["alloy.cif"]
    assert "not periodic" in messages["molecule.xyz"]


def test_missing_path_and_unknown_format_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.json")
    unknown = tmp_path / "data.weird"
    unknown.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="unrecognised"):
        load_dataset(unknown)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="unrecognised"):
        load_dataset(text)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no files"):
        load_dataset(empty)
    assert issubclass(DatasetError, ValueError)


def test_sample_is_deterministic_and_keeps_order(tmp_path: Path) -> None:
    materials, _ = load_dataset(DE_JONG, limit=50)
    a = sample_dataset(materials, 10, seed=7)
    b = sample_dataset(materials, 10, seed=7)
    assert [m.material_id for m in a] == [m.material_id for m in b]
    assert len({m.material_id for m in a}) == 10
    positions = [materials.index(m) for m in a]
    assert positions == sorted(positions)
    assert [m.material_id for m in sample_dataset(materials, 10, seed=8)] != [
        m.material_id for m in a
    ]
    assert sample_dataset(materials, 100, seed=0) == materials


def test_material_validates_its_tensor() -> None:
    atoms = bulk("Cu")
    with pytest.raises(ValueError, match="6x6"):
        Material(material_id="x", formula="Cu", atoms=atoms, reference_tensor_gpa=np.eye(3))
    with pytest.raises(ValueError, match="non-empty"):
        Material(material_id="", formula="Cu", atoms=atoms)
