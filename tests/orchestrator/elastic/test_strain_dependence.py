"""strain_dependence: the tensor from the smallest strains only and its change per column.

References are independent of the function: least-squares lines by ``numpy.polyfit``
over the hand-picked points, and a known linear tensor (dependence exactly 0)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from emt_evaluator import ConcurrentEMT
from shared_data import DE_JONG, load_json_gz

from umlip_orchestrator.datasets import Material
from umlip_orchestrator.elastic import (
    STRAIN_DEPENDENCE_FLAG_PCT,
    StrainSettings,
    deformation_set,
    fit_elastic_tensor,
    smallest_magnitude_mask,
    strain_dependence,
    strain_to_voigt,
)
from umlip_orchestrator.units import EV_PER_A3_TO_GPA
from umlip_orchestrator.workflow import WorkflowSettings, run_elastic_workflow

SIGMA0 = np.array([0.3, -0.2, 0.1, 0.05, -0.04, 0.02])  # residual stress, GPa
NORMAL = (-0.01, -0.005, 0.005, 0.01)
SHEAR = (-0.06, -0.03, 0.03, 0.06)


@pytest.fixture(scope="module")
def tensor() -> np.ndarray:
    """A real low-symmetry DFT tensor (first monoclinic one of the de Jong set), GPa."""
    entry = next(e for e in load_json_gz(DE_JONG) if 3 <= e["space_group"] <= 15)
    c = np.array(entry["elastic_tensor_original"], dtype=float)
    assert np.abs(c[:3, 3:]).max() > 1.0
    return c


def matrix(v: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def strains(convention: str = "strain", zero: bool = True) -> np.ndarray:
    settings = StrainSettings(normal=NORMAL, shear=SHEAR, convention=convention)
    cells = [d.green_lagrange_strain for d in deformation_set(settings)]
    return np.array(([np.zeros((3, 3))] if zero else []) + cells)


def stresses(c: np.ndarray, e: np.ndarray, cubic: dict[tuple[int, int], float]) -> np.ndarray:
    """sigma = sigma_0 + C eps + sum over (i, j) of k_ij eps_j^3 on stress component i."""
    out = []
    for voigt in strain_to_voigt(e):
        sigma = SIGMA0 + c @ voigt
        for (i, j), k in cubic.items():
            sigma[i] += k * voigt[j] ** 3
        out.append(matrix(sigma))
    return np.array(out)


def test_linear_data_has_no_strain_dependence(tensor: np.ndarray) -> None:
    for convention in ("strain", "deformation"):  # independent and lstsq fits
        e = strains(convention)
        result = strain_dependence(e, stresses(tensor, e, {}))
        assert result.ok
        np.testing.assert_allclose(result.dependence_pct, 0.0, atol=1e-10)
        assert result.max_dependence_pct == pytest.approx(0.0, abs=1e-10)
        np.testing.assert_allclose(result.small_tensor, 0.5 * (tensor + tensor.T), atol=1e-8)
        np.testing.assert_allclose(
            result.small_tensor, fit_elastic_tensor(e, stresses(tensor, e, {})).tensor, atol=1e-8
        )
        assert result.n_small_points == 13  # zero point + 2 per component


@pytest.mark.parametrize(
    ("i", "j", "k"),
    [(0, 0, -4.0e6), (3, 3, 2.0e4), (1, 0, 3.0e6)],  # normal, shear, off-diagonal response
)
def test_cubic_nonlinearity_gives_the_hand_computed_dependence(
    tensor: np.ndarray, i: int, j: int, k: float
) -> None:
    e = strains()
    result = strain_dependence(e, stresses(tensor, e, {(i, j): k}))
    # Independent reference: the least-squares lines of stress i against strain j.
    # "strain" convention: E_jj = a (normal), engineering shear 2 E_ij = 2 a.
    x_all = np.array([0.0, *NORMAL]) if j < 3 else np.array([0.0, *(2 * a for a in SHEAR)])
    smallest = np.min(np.abs(x_all[1:]))
    x_small = x_all[np.isclose(np.abs(x_all), smallest) | (x_all == 0.0)]
    assert len(x_small) == 3

    def line(x: np.ndarray) -> float:
        return np.polyfit(x, SIGMA0[i] + tensor[i, j] * x + k * x**3, 1)[0]

    slope_all, slope_small = line(x_all), line(x_small)
    column_all = tensor[:, j].copy()
    column_all[i] = slope_all
    expected = 100 * abs(slope_all - slope_small) / max(np.linalg.norm(column_all), 1.0)
    assert expected > 1.0  # a visible effect, not rounding
    assert result.dependence_pct[j] == pytest.approx(expected, rel=1e-8)
    others = np.delete(result.dependence_pct, j)
    np.testing.assert_allclose(others, 0.0, atol=1e-10)
    assert result.max_dependence_pct == pytest.approx(expected, rel=1e-8)
    # The small-strain raw tensor has the small-strain slope, the rest unchanged.
    small_expected = tensor.copy()
    small_expected[i, j] = slope_small
    np.testing.assert_allclose(result.small_raw_tensor, small_expected, atol=1e-8)
    np.testing.assert_allclose(
        result.small_tensor, 0.5 * (small_expected + small_expected.T), atol=1e-8
    )


def test_deformation_convention_keeps_both_signs_of_the_smallest_amount() -> None:
    e = strains("deformation")
    eps = strain_to_voigt(e)
    # +-0.5 % normal give |E| = 0.005 +- 0.0000125: both count as the smallest magnitude.
    assert not np.isclose(abs(eps[2, 0]), abs(eps[3, 0]), rtol=1e-6, atol=0)
    keep = smallest_magnitude_mask(e)
    magnitudes = [0.0] + [d.magnitude for d in deformation_set(StrainSettings(
        normal=NORMAL, shear=SHEAR, convention="deformation"))]  # fmt: skip
    np.testing.assert_array_equal(keep, [abs(m) in (0.0, 0.005, 0.03) for m in magnitudes])


def test_subset_that_cannot_be_fitted_gives_nan(tensor: np.ndarray) -> None:
    positive = StrainSettings(normal=(0.005, 0.01), shear=(0.03, 0.06))
    # Independent fit without the zero point: one smallest point per component.
    e = np.array([d.green_lagrange_strain for d in deformation_set(positive)])
    result = strain_dependence(e, stresses(tensor, e, {}))
    assert not result.ok and np.isnan(result.dependence_pct).all()
    assert np.isnan(result.small_tensor).all() and np.isnan(result.max_dependence_pct)
    # Mixed strains (lstsq): 6 smallest points cannot fix 7 parameters per row.
    mixed = StrainSettings(normal=(0.005, 0.01), shear=(0.03, 0.06), convention="deformation")
    e = np.array([d.green_lagrange_strain for d in deformation_set(mixed)])
    assert fit_elastic_tensor(e, stresses(tensor, e, {})).method == "lstsq"
    result = strain_dependence(e, stresses(tensor, e, {}))
    assert not result.ok and np.isnan(result.dependence_pct).all()


def test_flag_threshold_is_ten_percent() -> None:
    assert STRAIN_DEPENDENCE_FLAG_PCT == 10.0


def test_workflow_rows_carry_the_diagnostic() -> None:
    """EMT in process, clamped ions: the row's columns against polyfit lines through the
    deformed cells' stresses and the relaxed cell's own EMT stress (the zero point)."""
    material = Material(material_id="cu", formula="Cu", atoms=bulk("Cu", "fcc", a=3.6))
    (outcome,) = run_elastic_workflow(
        [material], ConcurrentEMT(), "emt", WorkflowSettings(ion_mode="clamped")
    )
    row = outcome.result
    assert row.status == "ok", row.error
    assert len(row.small_strain_tensor_gpa) == 36 and len(row.strain_dependence_pct) == 6
    relaxed = Atoms(
        numbers=row.atomic_numbers,
        positions=np.reshape(row.relaxed_positions_a, (-1, 3)),
        cell=np.reshape(row.relaxed_cell_a, (3, 3)),
        pbc=True,
    )
    relaxed.calc = EMT()
    sigma0 = relaxed.get_stress(voigt=True) * EV_PER_A3_TO_GPA
    eps = np.array([strain_to_voigt(np.reshape(d.green_lagrange_strain, (3, 3)))
                    for d in outcome.deformations])  # fmt: skip
    sig = np.array([d.stress_gpa for d in outcome.deformations])
    c_all, c_small = np.zeros((6, 6)), np.zeros((6, 6))
    for j in range(6):
        mine = np.abs(eps[:, j]) > 1e-10
        x = np.array([0.0, *eps[mine, j]])
        small = (x == 0.0) | np.isclose(np.abs(x), np.abs(x[1:]).min())
        assert small.sum() == 3
        for i in range(6):
            y = np.array([sigma0[i], *sig[mine, i]])
            c_all[i, j] = np.polyfit(x, y, 1)[0]
            c_small[i, j] = np.polyfit(x[small], y[small], 1)[0]
    np.testing.assert_allclose(
        np.reshape(row.small_strain_tensor_gpa, (6, 6)), 0.5 * (c_small + c_small.T), atol=1e-6
    )
    norm = np.maximum(np.linalg.norm(c_all, axis=0), 1.0)
    expected = 100 * np.linalg.norm(c_all - c_small, axis=0) / norm
    np.testing.assert_allclose(row.strain_dependence_pct, expected, rtol=1e-6, atol=1e-9)
    assert row.max_strain_dependence_pct == max(row.strain_dependence_pct)
    assert row.max_strain_dependence_pct > 0.0  # EMT is anharmonic
