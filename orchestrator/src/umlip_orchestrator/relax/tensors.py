"""Batched 3x3 tensor algebra of the vectorized relaxation engine (numpy).

``expm`` and its Frechet derivative as a Taylor series with scaling and squaring (they
agree with scipy's Pade approximants to rounding), Voigt to full tensors, and ASE's
``symmetrize_rank2`` applied to one tensor per structure.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
#: Taylor terms of expm after scaling to 1-norm <= 0.5 (truncation below 1e-19).
TAYLOR_TERMS = 16
_EYE3 = np.eye(3)


def voigt_to_full(voigt: FloatArray) -> FloatArray:
    """(B, 6) Voigt xx yy zz yz xz xy to (B, 3, 3) symmetric tensors."""
    xx, yy, zz, yz, xz, xy = voigt.T
    return np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)],
        axis=1,
    )


def symmetrize_rank2(
    lattice: FloatArray, inverse: FloatArray, tensors: FloatArray, projection: FloatArray
) -> FloatArray:
    """ASE's ``symmetrize_rank2`` of one (3, 3) tensor per structure."""
    scaled = lattice @ tensors @ lattice.transpose(0, 2, 1)
    symmetric = (projection @ scaled.reshape(-1, 9, 1)).reshape(-1, 3, 3)
    return inverse @ symmetric @ inverse.transpose(0, 2, 1)


def expm(matrices: FloatArray) -> FloatArray:
    """``scipy.linalg.expm`` of each (3, 3) matrix (Taylor series, scaling and squaring)."""
    return expm_and_frechet(matrices, None)[0]


def expm_frechet(matrices: FloatArray, directions: FloatArray) -> FloatArray:
    """``scipy.linalg.expm_frechet(A, E, compute_expm=False)`` of each pair (A, E)."""
    frechet = expm_and_frechet(matrices, directions)[1]
    assert frechet is not None
    return frechet


def expm_and_frechet(a: FloatArray, e: FloatArray | None) -> tuple[FloatArray, FloatArray | None]:
    """expm(A) and its Frechet derivative in direction E, batched over the first axis.

    Scales A (and E) by 2^-s so that the 1-norm is at most 0.5, sums the Taylor series of
    exp and of its derivative, then squares back: exp(2X) = exp(X)^2 and
    L(2X, 2E) = exp(X) L(X, E) + L(X, E) exp(X).
    """
    norm = np.abs(a).sum(axis=1).max(axis=1) if len(a) else np.zeros(0)
    with np.errstate(divide="ignore"):
        squarings = np.where(norm > 0.5, np.ceil(np.log2(norm / 0.5)), 0.0)
    squarings = np.nan_to_num(squarings, nan=0.0, posinf=0.0).astype(np.int64)
    scale = np.ldexp(1.0, -squarings)[:, None, None]
    x = a * scale
    term = np.broadcast_to(_EYE3, a.shape).copy()
    total = term.copy()
    dterm = dtotal = None
    if e is not None:
        de = e * scale
        dterm = np.zeros_like(a)
        dtotal = np.zeros_like(a)
    for k in range(1, TAYLOR_TERMS + 1):
        if dterm is not None and dtotal is not None:
            dterm = (dterm @ x + term @ de) / k
            dtotal += dterm
        term = term @ x / k
        total += term
    for i in range(int(squarings.max(initial=0))):
        more = (i < squarings)[:, None, None]
        if dtotal is not None:
            dtotal = np.where(more, total @ dtotal + dtotal @ total, dtotal)
        total = np.where(more, total @ total, total)
    return total, dtotal
