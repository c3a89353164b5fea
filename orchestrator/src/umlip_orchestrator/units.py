"""Unit conversions: the only place where eV/Å^3 becomes GPa.

The wire and every computation use Å, eV, eV/Å and eV/Å^3; result tables report
moduli in GPa (see SCIENCE.md, "Units and conventions").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from umlip_wire.batch import GPA_PER_EV_PER_A3

#: 1 eV/Å^3 in GPa (CODATA: e * 1e30 / 1e9): the harness's one constant, shared with
#: every adapter.
EV_PER_A3_TO_GPA: float = GPA_PER_EV_PER_A3


def ev_per_a3_to_gpa(value: ArrayLike) -> NDArray[np.float64]:
    """Converts a stress or modulus from eV/Å^3 to GPa."""
    return np.asarray(value, dtype=np.float64) * EV_PER_A3_TO_GPA


def gpa_to_ev_per_a3(value: ArrayLike) -> NDArray[np.float64]:
    """Converts a stress or modulus from GPa to eV/Å^3."""
    return np.asarray(value, dtype=np.float64) / EV_PER_A3_TO_GPA
