"""Properties derived from an elastic tensor (SCIENCE.md, section 3).

All moduli in GPa, the Debye temperature in K. The tensor is symmetrised,
C = (C + C^T) / 2, before anything is derived; S = C^-1. A singular C gives NaN for
every Reuss-based quantity (and for what depends on them) and ``born_stable=False``.
E and nu are computed here from K and G (never taken from a library, whose units vary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.constants as const
from ase import Atoms
from numpy.typing import ArrayLike

#: Above this condition number C is treated as singular.
_MAX_CONDITION: float = 1e12


def _div(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is zero or either is NaN."""
    if denominator == 0.0 or not (math.isfinite(numerator) and math.isfinite(denominator)):
        return math.nan
    return numerator / denominator


def youngs_modulus(k_gpa: float, g_gpa: float) -> float:
    """Isotropic Young's modulus E = 9KG / (3K + G), GPa (NaN if undefined)."""
    return _div(9.0 * k_gpa * g_gpa, 3.0 * k_gpa + g_gpa)


def poisson_ratio(k_gpa: float, g_gpa: float) -> float:
    """Isotropic Poisson's ratio nu = (3K - 2G) / (2 (3K + G)) (NaN if undefined)."""
    return _div(3.0 * k_gpa - 2.0 * g_gpa, 2.0 * (3.0 * k_gpa + g_gpa))


def mass_density(atoms: Atoms) -> float:
    """Mass density of a periodic structure, kg/m^3 (ASE masses, cell volume)."""
    mass_kg = float(np.sum(atoms.get_masses())) * const.atomic_mass
    return mass_kg / (float(atoms.get_volume()) * 1e-30)


def debye_temperature(
    k_gpa: float, g_gpa: float, density_kg_m3: float, volume_per_atom_a3: float
) -> float:
    """Debye temperature from the isotropic sound velocities.

    v_t = sqrt(G/rho), v_l = sqrt((K + 4G/3)/rho), v_m = [(2/v_t^3 + 1/v_l^3)/3]^(-1/3),
    theta_D = (h/k_B) (3 / (4 pi Omega))^(1/3) v_m.

    Args:
        k_gpa: bulk modulus K, GPa.
        g_gpa: shear modulus G, GPa.
        density_kg_m3: mass density rho, kg/m^3.
        volume_per_atom_a3: volume per atom Omega, Å^3.

    Returns:
        theta_D in K; NaN when a sound velocity is not real (G <= 0 or K + 4G/3 <= 0),
        or when an input is not finite or the density/volume is not positive.
    """
    values = (k_gpa, g_gpa, density_kg_m3, volume_per_atom_a3)
    if not all(math.isfinite(v) for v in values):
        return math.nan
    if g_gpa <= 0.0 or k_gpa + 4.0 * g_gpa / 3.0 <= 0.0:
        return math.nan
    if density_kg_m3 <= 0.0 or volume_per_atom_a3 <= 0.0:
        return math.nan
    v_t = math.sqrt(g_gpa * 1e9 / density_kg_m3)
    v_l = math.sqrt((k_gpa + 4.0 * g_gpa / 3.0) * 1e9 / density_kg_m3)
    v_m = ((2.0 / v_t**3 + 1.0 / v_l**3) / 3.0) ** (-1.0 / 3.0)
    omega_m3 = volume_per_atom_a3 * 1e-30
    return const.h / const.k * (3.0 / (4.0 * math.pi * omega_m3)) ** (1.0 / 3.0) * v_m


def _debye_of_atoms(k_gpa: float, g_gpa: float, atoms: Atoms | None) -> float | None:
    if atoms is None:
        return None
    if len(atoms) == 0:
        raise ValueError("atoms is empty")
    return debye_temperature(
        k_gpa, g_gpa, mass_density(atoms), float(atoms.get_volume()) / len(atoms)
    )


@dataclass(frozen=True)
class ModuliProperties:
    """What K and G alone give (e.g. for DFT sets without a full tensor).

    Attributes:
        k: bulk modulus, GPa.
        g: shear modulus, GPa.
        youngs_modulus: E = 9KG / (3K + G), GPa.
        poisson_ratio: nu = (3K - 2G) / (2 (3K + G)).
        pugh_ratio: K/G.
        debye_temperature: K; None without a structure.
    """

    k: float
    g: float
    youngs_modulus: float
    poisson_ratio: float
    pugh_ratio: float
    debye_temperature: float | None


def derived_from_moduli(k_gpa: float, g_gpa: float, atoms: Atoms | None = None) -> ModuliProperties:
    """E, nu, K/G and the Debye temperature from K and G.

    Args:
        k_gpa: bulk modulus K (usually K_VRH), GPa.
        g_gpa: shear modulus G (usually G_VRH), GPa.
        atoms: the relaxed structure, for density and volume per atom; optional.

    Returns:
        The derived quantities (NaN where undefined).
    """
    k, g = float(k_gpa), float(g_gpa)
    return ModuliProperties(
        k=k,
        g=g,
        youngs_modulus=youngs_modulus(k, g),
        poisson_ratio=poisson_ratio(k, g),
        pugh_ratio=_div(k, g),
        debye_temperature=_debye_of_atoms(k, g, atoms),
    )


@dataclass(frozen=True)
class ElasticProperties:
    """Properties of an elastic tensor (all moduli in GPa).

    Attributes:
        k_voigt, k_reuss, k_vrh: bulk modulus bounds and their mean, GPa.
        g_voigt, g_reuss, g_vrh: shear modulus bounds and their mean, GPa.
        youngs_modulus: E from K_VRH and G_VRH, GPa.
        poisson_ratio: nu from K_VRH and G_VRH.
        pugh_ratio: K_VRH / G_VRH.
        universal_anisotropy: A_U = 5 G_V/G_R + K_V/K_R - 6.
        cauchy_pressure: C12 - C44, GPa.
        debye_temperature: K, from K_VRH, G_VRH and the structure; None without one.
        born_stable: the symmetric C is positive definite (and invertible: False when
            its condition number exceeds 1e12, i.e. numerically singular).
        min_eigenvalue: smallest eigenvalue of the symmetric C, GPa.
    """

    k_voigt: float
    k_reuss: float
    k_vrh: float
    g_voigt: float
    g_reuss: float
    g_vrh: float
    youngs_modulus: float
    poisson_ratio: float
    pugh_ratio: float
    universal_anisotropy: float
    cauchy_pressure: float
    debye_temperature: float | None
    born_stable: bool
    min_eigenvalue: float

    def as_columns(self) -> dict[str, float | bool | None]:
        """The properties under their results-table column names (units in the name)."""
        return {
            "k_voigt_gpa": self.k_voigt,
            "k_reuss_gpa": self.k_reuss,
            "k_vrh_gpa": self.k_vrh,
            "g_voigt_gpa": self.g_voigt,
            "g_reuss_gpa": self.g_reuss,
            "g_vrh_gpa": self.g_vrh,
            "youngs_modulus_gpa": self.youngs_modulus,
            "poisson_ratio": self.poisson_ratio,
            "pugh_ratio": self.pugh_ratio,
            "universal_anisotropy": self.universal_anisotropy,
            "cauchy_pressure_gpa": self.cauchy_pressure,
            "debye_temperature_k": self.debye_temperature,
            "born_stable": self.born_stable,
            "min_eigenvalue_gpa": self.min_eigenvalue,
        }


def _compliance(c: np.ndarray) -> np.ndarray | None:
    """S = C^-1, or None when C is singular (or too ill-conditioned to trust)."""
    if np.linalg.cond(c) > _MAX_CONDITION:
        return None
    try:
        return np.linalg.inv(c)
    except np.linalg.LinAlgError:
        return None


def derive_properties(tensor_gpa: ArrayLike, atoms: Atoms | None = None) -> ElasticProperties:
    """Derives the elastic properties of SCIENCE.md section 3 from a tensor.

    Args:
        tensor_gpa: (6, 6) elastic tensor, Voigt order xx yy zz yz xz xy, GPa. It is
            symmetrised before use.
        atoms: the relaxed structure the tensor belongs to, for the Debye temperature.

    Returns:
        The properties; Reuss-based ones are NaN if C is singular.

    Raises:
        ValueError: the tensor is not a finite (6, 6) array.
    """
    c = np.asarray(tensor_gpa, dtype=np.float64)
    if c.shape != (6, 6):
        raise ValueError(f"elastic tensor must have shape (6, 6), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("elastic tensor contains NaN or infinite values")
    c = 0.5 * (c + c.T)

    diag_n = c[0, 0] + c[1, 1] + c[2, 2]
    off_n = c[0, 1] + c[1, 2] + c[0, 2]
    diag_s = c[3, 3] + c[4, 4] + c[5, 5]
    k_v = (diag_n + 2.0 * off_n) / 9.0
    g_v = (diag_n - off_n + 3.0 * diag_s) / 15.0

    s = _compliance(c)
    if s is None:
        k_r = g_r = math.nan
    else:
        sdiag_n = s[0, 0] + s[1, 1] + s[2, 2]
        soff_n = s[0, 1] + s[1, 2] + s[0, 2]
        sdiag_s = s[3, 3] + s[4, 4] + s[5, 5]
        k_r = _div(1.0, sdiag_n + 2.0 * soff_n)
        g_r = _div(15.0, 4.0 * sdiag_n - 4.0 * soff_n + 3.0 * sdiag_s)

    k_vrh = 0.5 * (k_v + k_r)
    g_vrh = 0.5 * (g_v + g_r)
    anisotropy = _div(5.0 * g_v, g_r) + _div(k_v, k_r) - 6.0
    min_eig = float(np.linalg.eigvalsh(c)[0])
    moduli = derived_from_moduli(k_vrh, g_vrh, atoms)
    return ElasticProperties(
        k_voigt=float(k_v),
        k_reuss=float(k_r),
        k_vrh=float(k_vrh),
        g_voigt=float(g_v),
        g_reuss=float(g_r),
        g_vrh=float(g_vrh),
        youngs_modulus=moduli.youngs_modulus,
        poisson_ratio=moduli.poisson_ratio,
        pugh_ratio=moduli.pugh_ratio,
        universal_anisotropy=float(anisotropy),
        cauchy_pressure=float(c[0, 1] - c[3, 3]),
        debye_temperature=moduli.debye_temperature,
        born_stable=bool(min_eig > 0.0 and s is not None),
        min_eigenvalue=min_eig,
    )
