"""The properties a report compares with DFT, and the tolerance of each (SCIENCE.md §4).

Each property is read from the same column name in the ``results`` table and in the
reference table (:class:`~umlip_orchestrator.report.reference.ReferenceRow`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from umlip_orchestrator.report.errors import ReportError


@dataclass(frozen=True)
class PropertySpec:
    """One compared property.

    Attributes:
        key: Short name used in file names and tables, e.g. ``"k_vrh"``.
        column: Column of the results table (and of the reference table).
        label: Human-readable name, e.g. ``"K_VRH"``.
        unit: Unit of the values (``""`` for dimensionless).
        epsilon: Default |reference| below which a material is left out of MAPE and of
            the relative errors (its absolute error still counts in MAE and Pearson R).
        needs_tensor: Whether the reference needs a full DFT tensor (not only K and G).
        needs_structure: Whether the reference needs the DFT structure (density).
    """

    key: str
    column: str
    label: str
    unit: str
    epsilon: float
    needs_tensor: bool = False
    needs_structure: bool = False

    @property
    def title(self) -> str:
        """Label with its unit, e.g. ``"K_VRH (GPa)"``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


#: The compared properties, in report order.
PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("k_vrh", "k_vrh_gpa", "K_VRH", "GPa", 1.0),
    PropertySpec("g_vrh", "g_vrh_gpa", "G_VRH", "GPa", 1.0),
    PropertySpec("youngs_modulus", "youngs_modulus_gpa", "E", "GPa", 1.0),
    PropertySpec("poisson_ratio", "poisson_ratio", "nu", "", 0.01),
    PropertySpec("pugh_ratio", "pugh_ratio", "K/G", "", 0.01),
    PropertySpec(
        "universal_anisotropy", "universal_anisotropy", "A_U", "", 0.01, needs_tensor=True
    ),
    PropertySpec("cauchy_pressure", "cauchy_pressure_gpa", "C12-C44", "GPa", 1.0, True),
    PropertySpec(
        "debye_temperature", "debye_temperature_k", "Debye T", "K", 1.0, needs_structure=True
    ),
)

PROPERTY_BY_KEY: dict[str, PropertySpec] = {p.key: p for p in PROPERTIES}


def epsilons(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """The zero-reference thresholds per property key, defaults updated by ``overrides``.

    Raises:
        ReportError: An override names an unknown property or is negative or not finite.
    """
    result = {p.key: p.epsilon for p in PROPERTIES}
    for key, value in (overrides or {}).items():
        if key not in result:
            raise ReportError(f"--epsilon: unknown property {key!r}; known: {', '.join(result)}")
        if not (value >= 0.0 and value != float("inf")):
            raise ReportError(f"--epsilon: {key} must be finite and >= 0, got {value}")
        result[key] = float(value)
    return result
