"""The rows a benchmark run writes: one frozen dataclass per Arrow table.

Each dataclass maps one-to-one onto an Arrow schema (see :mod:`umlip_orchestrator.tables`),
with units in the field metadata. Moduli are in GPa, the Debye temperature in K, times
in seconds, lengths in Å, energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Status of one (material, model) row.
Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True, kw_only=True)
class MaterialResult:
    """One row of the ``results`` table: one material computed by one model.

    Fields that could not be computed are None (e.g. everything after a failed relaxation).
    """

    material_id: str
    model: str
    formula: str
    n_atoms: int
    status: Status
    error: str | None
    ion_mode: str
    # Relaxation of the starting structure.
    relax_converged: bool | None
    relax_steps: int | None
    relaxed_energy_ev: float | None
    relaxed_volume_a3: float | None
    relaxed_cell_a: list[float] | None  # 9 numbers, row vectors, Å
    relaxed_positions_a: list[float] | None  # 3 n_atoms numbers, Å
    atomic_numbers: list[int]
    # Deformations.
    n_deformations: int | None
    deformations_converged: int | None  # relaxed-ion mode: how many converged
    # Elastic tensor, Voigt 6x6 row-major, GPa, and the fit's RMS residuals.
    elastic_tensor_gpa: list[float] | None
    fit_residuals_gpa: list[float] | None
    # Strain linearity: the tensor from the smallest strains only, and how much each
    # strained component's column differs from the all-strain fit (elastic.fit).
    small_strain_tensor_gpa: list[float] | None = None  # 36 numbers, GPa
    strain_dependence_pct: list[float] | None = None  # 6 numbers, %
    max_strain_dependence_pct: float | None = None
    # Derived properties (SCIENCE.md section 3).
    k_voigt_gpa: float | None
    k_reuss_gpa: float | None
    k_vrh_gpa: float | None
    g_voigt_gpa: float | None
    g_reuss_gpa: float | None
    g_vrh_gpa: float | None
    youngs_modulus_gpa: float | None
    poisson_ratio: float | None
    pugh_ratio: float | None
    universal_anisotropy: float | None
    cauchy_pressure_gpa: float | None
    debye_temperature_k: float | None
    born_stable: bool | None
    min_eigenvalue_gpa: float | None
    # Cost.
    wall_time_s: float  # from the start of its relaxation to its fit, in its worker
    seconds_per_material: float  # its actor's wall time so far / materials completed so far
    # Reference values from the dataset, if it has them (GPa).
    reference_k_vrh_gpa: float | None
    reference_g_vrh_gpa: float | None


@dataclass(frozen=True, kw_only=True)
class DeformationRecord:
    """One row of the ``stresses`` table: one deformed cell of one material and model."""

    material_id: str
    model: str
    index: int  # 0..n_deformations-1
    component: int  # Voigt component strained: 0..5 = xx yy zz yz xz xy
    magnitude: float  # applied strain amount (engineering for shear)
    green_lagrange_strain: list[float]  # 9 numbers, row-major
    stress_gpa: list[float] | None  # 6 numbers Voigt, tension positive; None if failed
    converged: bool | None  # relaxed-ion mode: did the ions converge
    error: str | None
    # Relaxed-ion mode: the relaxed positions in the deformed cell (3 n_atoms numbers, Å);
    # None in clamped mode (the homogeneously deformed positions) or if the cell failed.
    deformed_positions_a: list[float] | None = None
