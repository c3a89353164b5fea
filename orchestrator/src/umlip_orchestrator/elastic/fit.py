"""Elastic tensor from stress-strain pairs (SCIENCE.md, section 2).

Conventions: Voigt order xx, yy, zz, yz, xz, xy; Voigt strain uses engineering shear
(``2 E_yz``, ``2 E_xz``, ``2 E_xy``); stress is in GPa with ASE's sign (tension
positive); the fitted tensor satisfies ``sigma = sigma_0 + C eps`` with rows = stress
components and columns = strain components.

Two methods, chosen automatically (``method="auto"``):

- ``"independent"`` (the Materials Project method, used when every point has at most one
  nonzero Voigt strain component): ``C_ij`` is the least-squares slope (with intercept)
  of stress component ``i`` against strain component ``j`` over the points where ``j`` is
  the varied component plus every zero-strain point (the relaxed cell with its residual
  stress, if given). ``residuals[i, j]`` is the RMS residual of that line.
- ``"lstsq"`` (any other data, e.g. strains with second-order cross components): one
  least-squares fit of ``sigma = sigma_0 + C eps`` over all points (7 parameters per
  stress component). ``residuals[i, :]`` is the RMS residual of stress component ``i``.

Strain linearity (:func:`strain_dependence`): the tensor is fitted again from the
smallest strain magnitude of each component only (plus the zero-strain point), and for
each strained component ``j`` the change of column ``j`` of the raw (unsymmetrised)
tensor is reported in percent of its norm:
``100 ||C_all[:, j] - C_small[:, j]|| / max(||C_all[:, j]||, 1 GPa)``. A linear response
gives 0; a stress that is not linear over the strain range (an anharmonic potential, a
soft mode, an ion relaxation that jumps) gives more. Above
:data:`STRAIN_DEPENDENCE_FLAG_PCT` a result is flagged in comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from umlip_orchestrator.elastic.strains import VOIGT_LABELS

FitMethod = Literal["independent", "lstsq"]

_UPPER = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))

#: A result whose ``max_strain_dependence_pct`` exceeds this (%) is flagged: its tensor
#: depends on the strain magnitudes used, beyond what the fit residuals show.
STRAIN_DEPENDENCE_FLAG_PCT: float = 10.0

#: Points of a component whose |strain| is within this relative tolerance of its smallest
#: nonzero |strain| count as "the smallest magnitude" (in the ``"deformation"``
#: convention, +a and -a give Green-Lagrange strains a +- a^2/2, not equal in size).
SMALL_STRAIN_RTOL: float = 0.1

#: Floor of the column norm in the strain dependence, GPa (a column of ~0 GPa would make
#: any change look infinite).
DEPENDENCE_FLOOR_GPA: float = 1.0


def strain_to_voigt(strain: ArrayLike) -> NDArray[np.float64]:
    """Voigt form of strain tensors, engineering shear.

    Args:
        strain: (..., 3, 3) symmetric strain tensors, dimensionless.

    Returns:
        (..., 6) [E_xx, E_yy, E_zz, 2 E_yz, 2 E_xz, 2 E_xy].
    """
    e = np.asarray(strain, dtype=np.float64)
    e = 0.5 * (e + np.swapaxes(e, -1, -2))
    voigt = np.stack([e[..., i, j] for i, j in _UPPER], axis=-1)
    voigt[..., 3:] *= 2.0
    return voigt


def stress_to_voigt(stress: ArrayLike) -> NDArray[np.float64]:
    """Voigt form of stress tensors (symmetric part).

    Args:
        stress: (..., 3, 3) stress tensors, any unit.

    Returns:
        (..., 6) [s_xx, s_yy, s_zz, s_yz, s_xz, s_xy] in the same unit.
    """
    s = np.asarray(stress, dtype=np.float64)
    s = 0.5 * (s + np.swapaxes(s, -1, -2))
    return np.stack([s[..., i, j] for i, j in _UPPER], axis=-1)


def _readonly(array: ArrayLike) -> NDArray[np.float64]:
    result = np.array(array, dtype=np.float64)
    result.setflags(write=False)
    return result


@dataclass(frozen=True, eq=False)
class ElasticFit:
    """Result of :func:`fit_elastic_tensor`.

    Attributes:
        tensor: (6, 6) symmetrised elastic tensor (C + C^T) / 2, GPa.
        raw_tensor: (6, 6) fitted tensor before symmetrisation, GPa; row i = stress
            component, column j = strain component.
        residuals: (6, 6) RMS residual of the fit behind each C_ij, GPa (for ``"lstsq"``
            the residual of stress component i, repeated along the row).
        n_points: number of stress-strain pairs passed in (zero-strain points included).
        method: ``"independent"`` or ``"lstsq"`` (see the module docstring).
        residual_stress: (6,) fitted stress at zero strain (intercept), Voigt, GPa; for
            ``"independent"`` the mean of the six lines' intercepts.
    """

    tensor: NDArray[np.float64]
    raw_tensor: NDArray[np.float64]
    residuals: NDArray[np.float64]
    n_points: int
    method: FitMethod
    residual_stress: NDArray[np.float64]


def _check_inputs(strains: ArrayLike, stresses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates shapes and values; returns float arrays (n, 3, 3)."""
    try:
        e = np.asarray(strains, dtype=np.float64)
        s = np.asarray(stresses, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"strains and stresses must be numeric arrays: {exc}") from exc
    if e.ndim != 3 or e.shape[1:] != (3, 3):
        raise ValueError(f"strains must have shape (n, 3, 3), got {e.shape}")
    if s.ndim != 3 or s.shape[1:] != (3, 3):
        raise ValueError(f"stresses must have shape (n, 3, 3), got {s.shape}")
    if e.shape[0] != s.shape[0]:
        raise ValueError(f"got {e.shape[0]} strains but {s.shape[0]} stresses")
    if not np.all(np.isfinite(e)):
        raise ValueError("strains contain NaN or infinite values")
    if not np.all(np.isfinite(s)):
        raise ValueError("stresses contain NaN or infinite values")
    asym = np.abs(e - np.swapaxes(e, 1, 2)).max(initial=0.0)
    if asym > 1e-8 * max(1.0, float(np.abs(e).max(initial=0.0))):
        raise ValueError(
            f"strains must be symmetric (Green-Lagrange) tensors; max asymmetry {asym:.3g}"
        )
    return e, s


def _fit_independent(
    eps: np.ndarray, sig: np.ndarray, varied: np.ndarray, zero: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-component slopes. varied[k] = varied component of point k (-1 if none)."""
    c = np.zeros((6, 6))
    res = np.zeros((6, 6))
    intercepts = np.zeros((6, 6))
    for j in range(6):
        mask = zero | (varied == j)
        x = eps[mask, j]
        if np.unique(x).size < 2:
            raise ValueError(
                f"strain component {VOIGT_LABELS[j]} needs at least 2 distinct strain values "
                f"(got {np.unique(x).size}, counting the zero-strain point)"
            )
        design = np.column_stack([x, np.ones_like(x)])
        coef, *_ = np.linalg.lstsq(design, sig[mask], rcond=None)  # (2, 6)
        c[:, j] = coef[0]
        intercepts[:, j] = coef[1]
        res[:, j] = np.sqrt(np.mean((sig[mask] - design @ coef) ** 2, axis=0))
    return c, res, intercepts.mean(axis=1)


def _fit_lstsq(eps: np.ndarray, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sigma = sigma_0 + C eps over all points."""
    design = np.column_stack([eps, np.ones(eps.shape[0])])  # (n, 7)
    coef, _, rank, _ = np.linalg.lstsq(design, sig, rcond=None)  # (7, 6)
    if rank < 7:
        raise ValueError(
            f"the strains do not determine all 36 C_ij (design matrix [strain, 1] has rank "
            f"{rank} < 7): vary each of the 6 Voigt components with at least 7 points"
        )
    rms = np.sqrt(np.mean((sig - design @ coef) ** 2, axis=0))  # (6,) per stress component
    return coef[:6].T.copy(), np.repeat(rms[:, None], 6, axis=1), coef[6].copy()


def fit_elastic_tensor(
    strains: ArrayLike,
    stresses: ArrayLike,
    *,
    method: Literal["auto", "independent", "lstsq"] = "auto",
    zero_tol: float = 1e-10,
) -> ElasticFit:
    """Fits the elastic tensor to stress-strain pairs.

    Args:
        strains: (n, 3, 3) Green-Lagrange strains, dimensionless. Pass the relaxed cell as
            a zero-strain row with its residual stress to include it in every fit.
        stresses: (n, 3, 3) stresses, GPa, tension positive (ASE sign). Only the
            symmetric part is used.
        method: ``"auto"`` uses ``"independent"`` when every point has at most one Voigt
            strain component with ``|eps| > zero_tol`` and ``"lstsq"`` otherwise.
        zero_tol: absolute tolerance under which a Voigt strain component counts as zero.

    Returns:
        The fit; ``tensor`` is symmetrised.

    Raises:
        ValueError: bad shapes, non-finite values, asymmetric strains, too few points for
            a component, or ``method="independent"`` on data that is not independent.
    """
    if method not in ("auto", "independent", "lstsq"):
        raise ValueError(f"method must be 'auto', 'independent' or 'lstsq', got {method!r}")
    if not (np.isfinite(zero_tol) and zero_tol >= 0.0):
        raise ValueError(f"zero_tol must be finite and >= 0, got {zero_tol}")
    e, s = _check_inputs(strains, stresses)
    if e.shape[0] < 2:
        raise ValueError(f"need at least 2 stress-strain pairs, got {e.shape[0]}")
    eps = strain_to_voigt(e)
    sig = stress_to_voigt(s)
    nonzero = np.abs(eps) > zero_tol
    n_nonzero = nonzero.sum(axis=1)
    independent = bool(np.all(n_nonzero <= 1))

    chosen: FitMethod
    if method == "independent" and not independent:
        bad = int(np.argmax(n_nonzero > 1))
        raise ValueError(
            f"point {bad} varies {int(n_nonzero[bad])} Voigt strain components at once; "
            "use method='lstsq' (or 'auto') for such data"
        )
    chosen = "lstsq" if method == "lstsq" or not independent else "independent"

    if chosen == "independent":
        varied = np.where(n_nonzero == 1, np.argmax(nonzero, axis=1), -1)
        raw, residuals, sigma0 = _fit_independent(eps, sig, varied, n_nonzero == 0)
    else:
        raw, residuals, sigma0 = _fit_lstsq(eps, sig)
    return ElasticFit(
        tensor=_readonly(0.5 * (raw + raw.T)),
        raw_tensor=_readonly(raw),
        residuals=_readonly(residuals),
        n_points=int(e.shape[0]),
        method=chosen,
        residual_stress=_readonly(sigma0),
    )


@dataclass(frozen=True, eq=False)
class StrainDependence:
    """Result of :func:`strain_dependence`.

    Attributes:
        small_tensor: (6, 6) symmetrised tensor fitted from the smallest strain magnitude
            of each component (plus the zero-strain points), GPa; NaN if that subset
            cannot be fitted.
        small_raw_tensor: the same before symmetrisation, GPa.
        dependence_pct: (6,) per strained Voigt component j,
            ``100 ||C_all[:, j] - C_small[:, j]|| / max(||C_all[:, j]||, 1 GPa)`` over the
            raw tensors, %; NaN if the subset cannot be fitted.
        max_dependence_pct: the largest of ``dependence_pct``, %; NaN if any is NaN.
        n_small_points: points in the smallest-magnitude subset (zero-strain ones
            included).
    """

    small_tensor: NDArray[np.float64]
    small_raw_tensor: NDArray[np.float64]
    dependence_pct: NDArray[np.float64]
    max_dependence_pct: float
    n_small_points: int

    @property
    def ok(self) -> bool:
        """Whether the smallest-magnitude subset could be fitted."""
        return bool(np.all(np.isfinite(self.dependence_pct)))


def smallest_magnitude_mask(
    strains: ArrayLike, *, zero_tol: float = 1e-10, rtol: float = SMALL_STRAIN_RTOL
) -> NDArray[np.bool_]:
    """Which points belong to the smallest strain magnitude of their component.

    A point's component is its largest Voigt strain component in absolute value
    (engineering shear); points with every component ``<= zero_tol`` are zero-strain
    points and always kept. For each component, the points whose |strain| is at most
    ``(1 + rtol)`` times the smallest |strain| of that component are kept.

    Args:
        strains: (n, 3, 3) Green-Lagrange strains.

    Returns:
        (n,) boolean mask.
    """
    eps = strain_to_voigt(np.asarray(strains, dtype=np.float64))
    size = np.abs(eps)
    component = np.argmax(size, axis=1)
    magnitude = size.max(axis=1, initial=0.0)
    zero = magnitude <= zero_tol
    keep = zero.copy()
    for j in range(6):
        mine = ~zero & (component == j)
        if mine.any():
            keep |= mine & (magnitude <= (1.0 + rtol) * magnitude[mine].min())
    return keep


def strain_dependence(
    strains: ArrayLike,
    stresses: ArrayLike,
    *,
    zero_tol: float = 1e-10,
    fit: ElasticFit | None = None,
) -> StrainDependence:
    """How much the fitted tensor changes when only the smallest strains are used.

    Fits all points (or takes ``fit``, the fit of these same points), then only the
    points of :func:`smallest_magnitude_mask` with the same method, and compares the
    raw tensors column by column (see the module docstring).

    Args:
        strains: (n, 3, 3) Green-Lagrange strains, as for :func:`fit_elastic_tensor`.
        stresses: (n, 3, 3) stresses, GPa.
        zero_tol: as for :func:`fit_elastic_tensor`.
        fit: the fit of all points, if already computed.

    Returns:
        The small-strain tensor and the dependence per component; NaN where the
        smallest-magnitude subset cannot be fitted (e.g. mixed strains too few for the
        ``"lstsq"`` method, or a component with a single point and no zero-strain point).

    Raises:
        ValueError: the fit of all points fails (see :func:`fit_elastic_tensor`).
    """
    e, s = _check_inputs(strains, stresses)
    full = fit if fit is not None else fit_elastic_tensor(e, s, zero_tol=zero_tol)
    keep = smallest_magnitude_mask(e, zero_tol=zero_tol)
    try:
        small = fit_elastic_tensor(e[keep], s[keep], method=full.method, zero_tol=zero_tol)
    except ValueError:
        nan6, nan66 = np.full(6, np.nan), np.full((6, 6), np.nan)
        return StrainDependence(
            small_tensor=_readonly(nan66),
            small_raw_tensor=_readonly(nan66),
            dependence_pct=_readonly(nan6),
            max_dependence_pct=float("nan"),
            n_small_points=int(keep.sum()),
        )
    c_all, c_small = full.raw_tensor, small.raw_tensor
    norm = np.maximum(np.linalg.norm(c_all, axis=0), DEPENDENCE_FLOOR_GPA)
    dependence = 100.0 * np.linalg.norm(c_all - c_small, axis=0) / norm
    return StrainDependence(
        small_tensor=small.tensor,
        small_raw_tensor=small.raw_tensor,
        dependence_pct=_readonly(dependence),
        max_dependence_pct=float(dependence.max()),
        n_small_points=int(keep.sum()),
    )
