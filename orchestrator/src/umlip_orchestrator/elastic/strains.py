"""The deformation set of the stress-strain method (SCIENCE.md, section 2).

Each of the 6 independent Voigt components (xx, yy, zz, yz, xz, xy) is deformed at a few
magnitudes (default: ±0.5 %, ±1 % normal and ±3 %, ±6 % shear), giving 24 deformed cells.

Two conventions turn a magnitude into a deformation gradient ``F``; both are upper
triangular, so the lattice is deformed the way pymatgen does it:

- ``"deformation"``: ``F = I`` with ``F[i, j] += magnitude`` at the component's
  matrix position, as pymatgen's ``Deformation.from_index_amount`` does (and as the
  ``DeformedStructureSet`` of pymatgen before mid-2018 did). The Green-Lagrange strain is
  then ``E_ii = a + a^2/2`` for a normal component and, for a shear one,
  ``E_ij = a/2`` (engineering shear ``a``) with a second-order normal part ``E_jj = a^2/2``.
- ``"strain"`` (default): the Green-Lagrange strain tensor has exactly ``E_ij = E_ji = magnitude``
  (engineering shear ``2 * magnitude``) and nothing else; ``F`` is the upper Cholesky
  factor of ``I + 2E``. This is what today's pymatgen ``DeformedStructureSet`` and hence
  matcalc's ``ElasticityCalc`` generate. It is the default: every strained cell has
  exactly one independent Voigt strain component, so each C_ij is the plain
  least-squares slope SCIENCE.md section 2 prescribes.

Cells are row vectors (ASE): the deformed cell is ``cell @ F.T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
from ase import Atoms
from numpy.typing import ArrayLike, NDArray

#: Voigt component labels, in ASE order.
VOIGT_LABELS: tuple[str, ...] = ("xx", "yy", "zz", "yz", "xz", "xy")

#: Matrix position (upper triangle) of each Voigt component.
VOIGT_PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

#: Largest accepted |magnitude|: beyond it the cell is no longer "small strain".
MAX_MAGNITUDE: float = 0.2

StrainConvention = Literal["deformation", "strain"]


def _validated_magnitudes(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """Checks one list of magnitudes and returns it as a tuple of floats."""
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} magnitudes must be numbers, got {values!r}") from exc
    if not result:
        raise ValueError(f"{name} magnitudes must not be empty")
    for value in result:
        if not math.isfinite(value):
            raise ValueError(f"{name} magnitude {value} is not finite")
        if value == 0.0:
            raise ValueError(
                f"{name} magnitudes must be nonzero (the zero-strain point is the "
                "relaxed cell itself)"
            )
        if abs(value) >= MAX_MAGNITUDE:
            raise ValueError(f"{name} magnitude {value} is too large: need |x| < {MAX_MAGNITUDE}")
    if len(set(result)) != len(result):
        raise ValueError(f"{name} magnitudes contain duplicates: {result}")
    return result


@dataclass(frozen=True)
class StrainSettings:
    """Which deformed cells to compute. Store it with every result.

    Attributes:
        normal: magnitudes applied to each normal component (xx, yy, zz), dimensionless.
        shear: magnitudes applied to each shear component (yz, xz, xy), dimensionless.
        convention: how a magnitude becomes a deformation gradient: ``"deformation"``
            (``F[i, j] = magnitude``) or ``"strain"`` (Green-Lagrange ``E_ij = magnitude``,
            today's pymatgen/matcalc). See the module docstring.
    """

    normal: tuple[float, ...] = (-0.01, -0.005, 0.005, 0.01)
    shear: tuple[float, ...] = (-0.06, -0.03, 0.03, 0.06)
    convention: StrainConvention = "strain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _validated_magnitudes("normal", self.normal))
        object.__setattr__(self, "shear", _validated_magnitudes("shear", self.shear))
        if self.convention not in ("deformation", "strain"):
            raise ValueError(
                f"convention must be 'deformation' or 'strain', got {self.convention!r}"
            )

    @property
    def n_cells(self) -> int:
        """Number of deformed cells: 3 * len(normal) + 3 * len(shear)."""
        return 3 * (len(self.normal) + len(self.shear))

    def as_dict(self) -> dict[str, Any]:
        """Plain-data form, to record with a result."""
        data = asdict(self)
        data["normal"] = list(self.normal)
        data["shear"] = list(self.shear)
        return data


def _readonly(array: ArrayLike) -> NDArray[np.float64]:
    """A float64 copy that cannot be modified in place."""
    result = np.array(array, dtype=np.float64)
    result.setflags(write=False)
    return result


def green_lagrange(gradient: ArrayLike) -> NDArray[np.float64]:
    """Green-Lagrange strain of a deformation gradient.

    Args:
        gradient: (3, 3) deformation gradient F.

    Returns:
        (3, 3) strain E = (F^T F - I) / 2, dimensionless.
    """
    f = np.asarray(gradient, dtype=np.float64)
    return 0.5 * (f.T @ f - np.eye(3))


@dataclass(frozen=True, eq=False)
class Deformation:
    """One deformed cell of the set.

    Attributes:
        component: the independently varied Voigt component, 0..5 (xx yy zz yz xz xy).
        magnitude: the requested magnitude (meaning set by the convention), dimensionless.
        gradient: (3, 3) deformation gradient F, read-only; deformed cell = cell @ F.T.
    """

    component: int
    magnitude: float
    gradient: NDArray[np.float64]

    def __post_init__(self) -> None:
        if not 0 <= int(self.component) <= 5 or int(self.component) != self.component:
            raise ValueError(f"component must be an integer in 0..5, got {self.component!r}")
        object.__setattr__(self, "component", int(self.component))
        object.__setattr__(self, "magnitude", float(self.magnitude))
        gradient = _readonly(self.gradient)
        if gradient.shape != (3, 3):
            raise ValueError(f"gradient must have shape (3, 3), got {gradient.shape}")
        if not np.all(np.isfinite(gradient)) or np.linalg.det(gradient) <= 0.0:
            raise ValueError("gradient must be finite with a positive determinant")
        object.__setattr__(self, "gradient", gradient)

    @property
    def label(self) -> str:
        """Voigt label of the varied component, e.g. ``"xy"``."""
        return VOIGT_LABELS[self.component]

    @property
    def green_lagrange_strain(self) -> NDArray[np.float64]:
        """(3, 3) Green-Lagrange strain E = (F^T F - I) / 2, dimensionless."""
        return green_lagrange(self.gradient)


def _gradient(component: int, magnitude: float, convention: StrainConvention) -> np.ndarray:
    """Deformation gradient of one (component, magnitude) in the given convention."""
    i, j = VOIGT_PAIRS[component]
    if convention == "deformation":
        gradient = np.eye(3)
        gradient[i, j] += magnitude
        return gradient
    strain = np.zeros((3, 3))
    strain[i, j] = strain[j, i] = magnitude
    # Upper Cholesky factor U of I + 2E: U^T U = I + 2E, as pymatgen's
    # convert_strain_to_deformation(shape="upper").
    return scipy.linalg.cholesky(np.eye(3) + 2.0 * strain, lower=False)


def deformation_set(settings: StrainSettings | None = None) -> list[Deformation]:
    """The independent deformations of the stress-strain method.

    Args:
        settings: magnitudes and convention; defaults to ``StrainSettings()``.

    Returns:
        ``settings.n_cells`` deformations (24 by default), ordered by Voigt component
        (xx, yy, zz, yz, xz, xy), then by magnitude as given in the settings.
    """
    settings = StrainSettings() if settings is None else settings
    result: list[Deformation] = []
    for component in range(6):
        magnitudes = settings.normal if component < 3 else settings.shear
        for magnitude in magnitudes:
            gradient = _gradient(component, magnitude, settings.convention)
            result.append(Deformation(component, magnitude, gradient))
    return result


def deform_atoms(atoms: Atoms, deformation: Deformation | ArrayLike) -> Atoms:
    """A deformed copy of a structure.

    The cell becomes ``cell @ F.T`` and the atoms move with it (fractional coordinates
    are kept, ``scale_atoms=True``). The copy has no calculator. Constraints are copied,
    except ``FixSymmetry``, which holds the symmetry of the undeformed cell and would be
    wrong for the (lower-symmetry) deformed one: build a new one if needed.

    Args:
        atoms: the structure (usually the relaxed cell); not modified.
        deformation: a :class:`Deformation` or a (3, 3) deformation gradient F.

    Returns:
        The deformed structure.
    """
    if isinstance(deformation, Deformation):
        gradient = deformation.gradient
    else:
        gradient = np.asarray(deformation, dtype=np.float64)
        if gradient.shape != (3, 3) or not np.all(np.isfinite(gradient)):
            raise ValueError("deformation gradient must be a finite (3, 3) array")
    deformed = atoms.copy()
    deformed.constraints = [c for c in deformed.constraints if type(c).__name__ != "FixSymmetry"]
    new_cell = np.asarray(atoms.get_cell()) @ gradient.T
    deformed.set_cell(new_cell, scale_atoms=True, apply_constraint=False)
    return deformed
