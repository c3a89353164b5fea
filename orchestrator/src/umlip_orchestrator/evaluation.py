"""What a potential returns for one structure, independent of transport.

The gRPC client produces these; workflow code (relaxation, deformation) consumes them
through a :data:`BatchEvaluator`, so it can be tested with an in-process potential too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from numpy.typing import NDArray


@dataclass(frozen=True)
class Evaluation:
    """Energy, forces and stress of one structure.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3) forces, eV/Å.
        stress: (6,) stress, eV/Å^3, Voigt xx yy zz yz xz xy, ASE sign (tensile > 0).
    """

    energy: float
    forces: NDArray[np.float64]
    stress: NDArray[np.float64]


class StructureFailed(Exception):  # noqa: N818 - a result value, not only raised
    """The potential could not evaluate one structure (reported in-band by the service).

    Attributes:
        code: the protocol's error code name, e.g. "UNSUPPORTED_ELEMENT".
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


#: Evaluates a batch of structures in one call. Returns, in input order and length,
#: an :class:`Evaluation` or a :class:`StructureFailed` per structure. Transport
#: errors (service unavailable, bad request) are raised, not returned.
BatchEvaluator = Callable[[Sequence[Atoms]], Sequence[Evaluation | StructureFailed]]
