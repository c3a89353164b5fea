"""Reference sets: the bundled K/G set, the de Jong full-tensor set, user files, errors.

Derived DFT values are checked against pymatgen's ElasticTensor (K, G, A_U), against
the values listed in the de Jong file, and against hand formulas (E, nu, Cauchy
pressure, Debye temperature with constants typed in here).
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from pymatgen.analysis.elasticity import ElasticTensor
from pymatgen.core import Lattice, Structure
from report_helpers import DE_JONG, MP_BINARY

from umlip_orchestrator.report import ReportError, load_reference, reference_from_results
from umlip_orchestrator.report.build import load_references

H = 6.62607015e-34  # J s
K_B = 1.380649e-23  # J/K


def debye_by_hand(k_gpa: float, g_gpa: float, structure: Structure) -> float:
    """theta_D = h/k_B (3 / (4 pi Omega))^(1/3) v_m from pymatgen's density and volume."""
    rho = structure.density * 1000.0  # g/cm^3 -> kg/m^3
    v_t = math.sqrt(g_gpa * 1e9 / rho)
    v_l = math.sqrt((k_gpa + 4 * g_gpa / 3) * 1e9 / rho)
    v_m = (3.0 / (2.0 / v_t**3 + 1.0 / v_l**3)) ** (1.0 / 3.0)
    omega = structure.volume / len(structure) * 1e-30
    return H / K_B * (3.0 / (4.0 * math.pi * omega)) ** (1.0 / 3.0) * v_m


def raw(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def test_de_jong_full_tensor_set_against_pymatgen_and_hand_formulas() -> None:
    entries = raw(DE_JONG)
    reference = load_reference(DE_JONG)
    assert reference.n_problems == 0
    assert len(reference.rows) == len(entries) == 1181
    assert all(r.source == "tensor" and r.dft_stable and r.included for r in reference.rows)
    assert reference.has_stability
    rows = reference.by_id()
    for entry in entries[::25]:
        row = rows[entry["material_id"]]
        c = np.array(entry["elastic_tensor_original"])
        tensor = ElasticTensor.from_voigt(c)
        assert row.k_vrh_gpa == pytest.approx(tensor.k_vrh, rel=1e-9)
        assert row.g_vrh_gpa == pytest.approx(tensor.g_vrh, rel=1e-9)
        assert row.universal_anisotropy == pytest.approx(
            tensor.universal_anisotropy, rel=1e-7, abs=1e-9
        )
        # The values listed in the file, from the same tensors (rounded there).
        assert row.k_vrh_gpa == pytest.approx(entry["K_VRH"], rel=1e-3)
        assert row.g_vrh_gpa == pytest.approx(entry["G_VRH"], rel=1e-3)
        k, g = tensor.k_vrh, tensor.g_vrh
        assert row.youngs_modulus_gpa == pytest.approx(9 * k * g / (3 * k + g), rel=1e-9)
        assert row.poisson_ratio == pytest.approx((3 * k - 2 * g) / (6 * k + 2 * g), rel=1e-9)
        assert row.poisson_ratio == pytest.approx(entry["poisson_ratio"], abs=2e-3)
        assert row.pugh_ratio == pytest.approx(k / g, rel=1e-9)
        assert row.cauchy_pressure_gpa == pytest.approx(
            (c[0, 1] + c[1, 0]) / 2 - c[3, 3], rel=1e-9, abs=1e-9
        )
        structure = Structure.from_dict(entry["structure"])
        assert row.debye_temperature_k == pytest.approx(debye_by_hand(k, g, structure), rel=1e-3)


def test_mp_binary_kg_set_and_its_stability_filter() -> None:
    entries = raw(MP_BINARY)
    reference = load_reference(MP_BINARY)
    assert len(reference.rows) == len(entries) == 3953
    assert all(r.source == "moduli" and r.dft_stable is None for r in reference.rows)
    assert not reference.has_stability
    positive = {
        e["mp_id"] for e in entries if e["bulk_modulus_vrh"] > 0 and e["shear_modulus_vrh"] > 0
    }
    assert {r.material_id for r in reference.rows if r.included} == positive
    assert sum(not r.included for r in reference.rows) == len(entries) - len(positive)
    rows = reference.by_id()
    for entry in entries[::200]:
        row = rows[entry["mp_id"]]
        k, g = entry["bulk_modulus_vrh"], entry["shear_modulus_vrh"]
        assert (row.k_vrh_gpa, row.g_vrh_gpa) == (k, g)
        assert row.youngs_modulus_gpa == pytest.approx(9 * k * g / (3 * k + g), rel=1e-12)
        assert row.poisson_ratio == pytest.approx((3 * k - 2 * g) / (6 * k + 2 * g), rel=1e-12)
        assert math.isnan(row.universal_anisotropy) and math.isnan(row.cauchy_pressure_gpa)
        if k > 0 and g > 0:
            structure = Structure.from_dict(entry["structure"])
            assert row.debye_temperature_k == pytest.approx(
                debye_by_hand(k, g, structure), rel=1e-3
            )


def _nacl() -> Structure:
    return Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _cubic(c11: float, c12: float, c44: float) -> list[list[float]]:
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    np.fill_diagonal(c[:3, :3], c11)
    c[3, 3] = c[4, 4] = c[5, 5] = c44
    return c.tolist()


def test_user_json_tensors_moduli_and_no_values(tmp_path: Path) -> None:
    nacl = _nacl().as_dict()
    entries = [
        {"material_id": "stable", "structure": nacl, "elastic_tensor": _cubic(50, 12, 13)},
        {"material_id": "unstable", "structure": nacl, "elastic_tensor": _cubic(50, 60, 13)},
        {"material_id": "kg", "structure": nacl, "K_VRH": 25.0, "G_VRH": 15.0},
        {"material_id": "negative-g", "structure": nacl, "K_VRH": 25.0, "G_VRH": -1.0},
        {"material_id": "nothing", "structure": nacl},
        {"material_id": "broken"},
    ]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    reference = load_reference(path)
    assert reference.n_problems == 1  # "broken" has no structure
    rows = reference.by_id()
    assert rows["stable"].included and rows["stable"].dft_stable
    assert rows["stable"].k_vrh_gpa == pytest.approx((50 + 2 * 12) / 3)
    assert rows["stable"].universal_anisotropy == pytest.approx(
        ElasticTensor.from_voigt(_cubic(50, 12, 13)).universal_anisotropy
    )
    assert not rows["unstable"].included and rows["unstable"].dft_stable is False
    assert "Born" in (rows["unstable"].exclusion or "")
    assert rows["kg"].included and rows["kg"].dft_stable is None
    assert rows["kg"].debye_temperature_k == pytest.approx(debye_by_hand(25, 15, _nacl()), 1e-3)
    assert not rows["negative-g"].included
    assert rows["nothing"].source == "none" and not rows["nothing"].included


def test_user_extxyz_with_tensor_and_moduli(tmp_path: Path) -> None:
    cu = bulk("Cu", "fcc", a=3.61)
    cu.info |= {"material_id": "cu", "elastic_tensor": np.array(_cubic(170, 122, 75)).ravel()}
    al = bulk("Al", "fcc", a=4.05)
    al.info |= {"material_id": "al", "K_VRH": 76.0, "G_VRH": 26.0}
    path = tmp_path / "mine.extxyz"
    write(path, [cu, al])
    rows = load_reference(path).by_id()
    assert rows["cu"].source == "tensor" and rows["cu"].dft_stable
    assert rows["cu"].k_vrh_gpa == pytest.approx((170 + 2 * 122) / 3)
    assert rows["cu"].cauchy_pressure_gpa == pytest.approx(122 - 75)
    assert rows["al"].source == "moduli" and rows["al"].g_vrh_gpa == 26.0
    assert math.isfinite(rows["al"].debye_temperature_k)


def test_several_references_first_wins(tmp_path: Path) -> None:
    first = tmp_path / "a.json"
    second = tmp_path / "b.json"
    nacl = _nacl().as_dict()
    first.write_text(json.dumps([{"id": "x", "structure": nacl, "K_VRH": 1.0, "G_VRH": 1.0}]))
    second.write_text(
        json.dumps(
            [
                {"id": "x", "structure": nacl, "K_VRH": 2.0, "G_VRH": 2.0},
                {"id": "y", "structure": nacl, "K_VRH": 3.0, "G_VRH": 3.0},
            ]
        )
    )
    merged = load_references([first, second])
    assert {r.material_id: r.k_vrh_gpa for r in merged.rows} == {"x": 1.0, "y": 3.0}
    assert merged.name == "a.json + b.json"


def test_unreadable_references_raise_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="unreadable reference"):
        load_reference(tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json.gz"
    corrupt.write_bytes(b"not gzip at all")
    with pytest.raises(ReportError, match="no material could be read"):
        load_reference(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ReportError, match="unreadable reference"):
        load_reference(text)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"id": "x", "structure": _nacl().as_dict()}]))
    with pytest.raises(ReportError, match="no reference values"):
        load_reference(bare)


def test_reference_from_results_rows() -> None:
    rows = [
        {"material_id": "m1", "formula": "NaCl", "reference_k_vrh_gpa": None,
         "reference_g_vrh_gpa": None},
        {"material_id": "m1", "formula": "NaCl", "reference_k_vrh_gpa": 25.0,
         "reference_g_vrh_gpa": 15.0},
        {"material_id": "m2", "formula": "NaCl", "reference_k_vrh_gpa": 25.0,
         "reference_g_vrh_gpa": 15.0},
        {"material_id": "m3", "formula": "NaCl", "reference_k_vrh_gpa": None,
         "reference_g_vrh_gpa": None},
    ]  # fmt: skip
    from pymatgen.io.ase import AseAtomsAdaptor

    reference = reference_from_results(rows, {"m1": AseAtomsAdaptor.get_atoms(_nacl())})
    by_id = reference.by_id()
    assert by_id["m1"].k_vrh_gpa == 25.0 and by_id["m1"].included
    assert by_id["m1"].debye_temperature_k == pytest.approx(debye_by_hand(25, 15, _nacl()), 1e-3)
    assert math.isnan(by_id["m2"].debye_temperature_k)  # no structure
    assert by_id["m3"].source == "none" and not by_id["m3"].included


def test_run_structures_found_by_digest_when_the_run_path_is_gone(tmp_path: Path) -> None:
    """A run made elsewhere (a container reads the bundled sample from its installed
    package) still finds its structures here by the dataset's digest; a dataset file
    that changed since the run is not used."""
    from umlip_orchestrator.datasets import dataset_sha256, load_dataset
    from umlip_orchestrator.package_data import BUNDLED_SAMPLE
    from umlip_orchestrator.report.reference import structures_from_manifest

    bundled, _ = load_dataset(BUNDLED_SAMPLE)
    wanted = {m.material_id for m in bundled[:3]}
    container_path = "/opt/venv/lib/python3.11/site-packages/umlip_orchestrator/data/x.json.gz"
    run = {"dataset": container_path, "dataset_sha256": dataset_sha256(BUNDLED_SAMPLE)}
    (tmp_path / "manifest.json").write_text(json.dumps({"runs": [run]}))
    found, notes = structures_from_manifest(tmp_path, wanted)
    assert set(found) == wanted and notes == []
    by_id = {m.material_id: m.atoms for m in bundled}
    for material_id, atoms in found.items():
        np.testing.assert_allclose(atoms.cell.array, by_id[material_id].cell.array)

    changed = tmp_path / "mine.json.gz"
    changed.write_bytes(BUNDLED_SAMPLE.read_bytes())
    run = {"dataset": str(changed), "dataset_sha256": "0" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps({"runs": [run]}))
    found, notes = structures_from_manifest(tmp_path, wanted)
    assert found == {} and len(notes) == 1 and "changed since the run" in notes[0]
