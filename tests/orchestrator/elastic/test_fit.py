"""fit_elastic_tensor: recovery of a real low-symmetry DFT tensor, pymatgen parity, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.analysis.elasticity import ElasticTensor
from shared_data import DE_JONG, load_json_gz

from umlip_orchestrator.elastic import (
    StrainSettings,
    deformation_set,
    fit_elastic_tensor,
    strain_to_voigt,
)

NOISE_GPA = 0.01  # stress noise, GPa (0.1 kbar: a tight DFT/ML stress)


@pytest.fixture(scope="module")
def monoclinic_tensor() -> np.ndarray:
    """The first monoclinic (space groups 3-15) tensor of the de Jong set, GPa."""
    entries = load_json_gz(DE_JONG)
    entry = next(e for e in entries if 3 <= e["space_group"] <= 15)
    c = np.array(entry["elastic_tensor_original"])
    # Really non-cubic: normal-shear couplings present.
    assert np.abs(c[:3, 3:]).max() > 1.0
    return c


def voigt_stress_to_matrix(v: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def synthetic(
    c: np.ndarray, convention: str, noise: float, seed: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strains (25, 3, 3) incl. the zero point first, stresses (25, 3, 3) GPa, sigma_0 (6,)."""
    rng = np.random.default_rng(seed)
    sigma0 = np.array([0.3, -0.2, 0.1, 0.05, -0.04, 0.02])  # residual stress, GPa
    strains = [np.zeros((3, 3))] + [
        d.green_lagrange_strain for d in deformation_set(StrainSettings(convention=convention))
    ]
    stresses = [
        voigt_stress_to_matrix(sigma0 + c @ strain_to_voigt(e) + rng.normal(0, noise, 6))
        for e in strains
    ]
    return np.array(strains), np.array(stresses), sigma0


def slope_tolerance(strains: np.ndarray, noise: float) -> np.ndarray:
    """(6,) 6-sigma error bar of a slope along each strain column (per-component fit)."""
    eps = strain_to_voigt(strains)
    tol = []
    for j in range(6):
        others = np.delete(np.abs(eps), j, axis=1).max(axis=1) < 1e-10
        x = eps[others, j]
        tol.append(6 * noise / np.sqrt(np.sum((x - x.mean()) ** 2)))
    return np.array(tol)


def lstsq_tolerance(strains: np.ndarray, noise: float) -> np.ndarray:
    """(6,) 6-sigma error bar of each strain column's coefficient in sigma = s0 + C eps."""
    design = np.column_stack([strain_to_voigt(strains), np.ones(len(strains))])
    covariance = noise**2 * np.linalg.inv(design.T @ design)
    return 6 * np.sqrt(np.diag(covariance)[:6])


def test_exact_data_recovered_both_conventions(monoclinic_tensor: np.ndarray) -> None:
    c = monoclinic_tensor
    for convention, method in (("strain", "independent"), ("deformation", "lstsq")):
        strains, stresses, sigma0 = synthetic(c, convention, noise=0.0)
        fit = fit_elastic_tensor(strains, stresses)
        assert fit.method == method
        assert fit.n_points == 25
        np.testing.assert_allclose(fit.raw_tensor, c, atol=1e-8)
        np.testing.assert_allclose(fit.tensor, c, atol=1e-8)
        np.testing.assert_allclose(fit.residual_stress, sigma0, atol=1e-9)
        assert fit.residuals.shape == (6, 6)
        assert np.all(fit.residuals < 1e-9)


def test_noisy_independent_strains_recover_tensor(monoclinic_tensor: np.ndarray) -> None:
    c = monoclinic_tensor
    strains, stresses, _ = synthetic(c, "strain", noise=NOISE_GPA)
    fit = fit_elastic_tensor(strains, stresses)
    assert fit.method == "independent"
    tol = slope_tolerance(strains, NOISE_GPA)  # ~0.4 GPa normal, ~0.04 GPa shear
    assert np.all(np.abs(fit.raw_tensor - c) < tol[None, :])
    np.testing.assert_allclose(fit.tensor, 0.5 * (fit.raw_tensor + fit.raw_tensor.T))
    # RMS residuals of 5-point lines (2 parameters) average to ~ sqrt(3/5) * noise.
    assert 0.3 * NOISE_GPA < fit.residuals.mean() < 1.5 * NOISE_GPA


def test_noisy_deformation_convention_uses_lstsq(monoclinic_tensor: np.ndarray) -> None:
    c = monoclinic_tensor
    strains, stresses, sigma0 = synthetic(c, "deformation", noise=NOISE_GPA)
    fit = fit_elastic_tensor(strains, stresses)
    assert fit.method == "lstsq"
    tol = lstsq_tolerance(strains, NOISE_GPA)  # ~3.8 GPa normal, ~0.6 GPa shear
    assert np.all(np.abs(fit.raw_tensor - c) < tol[None, :])
    np.testing.assert_allclose(fit.residual_stress, sigma0, atol=0.05)
    assert np.all(fit.residuals < 2 * NOISE_GPA)
    # Residuals are per stress component: constant along each row.
    np.testing.assert_array_equal(fit.residuals, fit.residuals[:, :1].repeat(6, axis=1))


def test_agrees_with_pymatgen_from_independent_strains(monoclinic_tensor: np.ndarray) -> None:
    strains, stresses, _ = synthetic(monoclinic_tensor, "strain", noise=NOISE_GPA, seed=7)
    fit = fit_elastic_tensor(strains, stresses)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ElasticTensor.from_independent_strains(
            list(strains[1:]), list(stresses[1:]), eq_stress=stresses[0]
        )
    # pymatgen's c_ij is d(stress_j)/d(strain_i): the transpose of ours, unsymmetrised.
    np.testing.assert_allclose(fit.raw_tensor, reference.voigt.T, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(fit.tensor, reference.voigt_symmetrized.voigt, rtol=1e-9, atol=1e-8)


def test_forced_lstsq_on_independent_data(monoclinic_tensor: np.ndarray) -> None:
    strains, stresses, _ = synthetic(monoclinic_tensor, "strain", noise=0.0)
    fit = fit_elastic_tensor(strains, stresses, method="lstsq")
    assert fit.method == "lstsq"
    np.testing.assert_allclose(fit.tensor, monoclinic_tensor, atol=1e-8)


def test_without_zero_point_and_order_independent(monoclinic_tensor: np.ndarray) -> None:
    strains, stresses, _ = synthetic(monoclinic_tensor, "strain", noise=NOISE_GPA)
    order = np.random.default_rng(3).permutation(len(strains))
    shuffled = fit_elastic_tensor(strains[order], stresses[order])
    np.testing.assert_allclose(
        shuffled.raw_tensor, fit_elastic_tensor(strains, stresses).raw_tensor
    )
    fit = fit_elastic_tensor(strains[1:], stresses[1:])
    assert fit.n_points == 24
    assert np.all(
        np.abs(fit.raw_tensor - monoclinic_tensor) < 2 * slope_tolerance(strains, NOISE_GPA)
    )


def test_bad_input_raises(monoclinic_tensor: np.ndarray) -> None:
    strains, stresses, _ = synthetic(monoclinic_tensor, "strain", noise=0.0)
    cases = [
        (strains[:, :2], stresses, "shape"),
        (strains, stresses[:, :, :2], "shape"),
        (strains.reshape(-1, 9), stresses, "shape"),
        (strains[:-1], stresses, "strains but"),
        (strains[:1], stresses[:1], "at least 2"),
    ]
    nan_strain = strains.copy()
    nan_strain[3, 0, 0] = np.nan
    inf_stress = stresses.copy()
    inf_stress[2, 1, 1] = np.inf
    asym = strains.copy()
    asym[22, 0, 1] += 1e-3
    cases += [
        (nan_strain, stresses, "strains contain"),
        (strains, inf_stress, "stresses contain"),
    ]
    cases += [(asym, stresses, "symmetric")]
    # No xy points (component 5 = last 4 rows): the xy column cannot be fitted.
    cases += [(strains[:-4], stresses[:-4], "xy")]
    for e, s, message in cases:
        with pytest.raises(ValueError, match=message):
            fit_elastic_tensor(e, s)
    # Non-independent data cannot use the per-component method; too few points for lstsq.
    mixed = strains.copy()
    mixed[1, 1, 1] = 1e-3
    with pytest.raises(ValueError, match="lstsq"):
        fit_elastic_tensor(mixed, stresses, method="independent")
    with pytest.raises(ValueError, match="rank"):
        fit_elastic_tensor(mixed[:6], stresses[:6])
    with pytest.raises(ValueError, match="method"):
        fit_elastic_tensor(strains, stresses, method="polyfit")  # type: ignore[arg-type]
