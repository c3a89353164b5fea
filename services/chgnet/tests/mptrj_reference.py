"""DFT frames of MPtrj and their MP2020 energy corrections (accuracy tests).

The energies in ``mptrj-random-1k.xyz`` are VASP's raw totals, while CHGNet and
SevenNet-0 were trained on MPtrj's *corrected* energies (Materials Project 2020
compatibility: anion and GGA+U corrections, up to ~2 eV/atom). The accuracy test adds
each frame's correction to the DFT energy, applying the Materials Project's rule for
GGA+U: U on Co, Cr, Fe, Mn, Mo, Ni, V, W when the structure holds O or F. The file's
stresses are eV/Å^3 with ASE's sign already (checked against the model on 100 frames:
the flipped sign is 8x worse).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from numpy.typing import NDArray

from umlip_serve.testing import shared_data

#: Shared reference data: <repo>/../shared/data (see its README).
DATA_DIR = shared_data(__file__)
MPTRJ_RANDOM = DATA_DIR / "mptrj-random-1k.xyz"
#: The Materials Project's U values (eV) for oxides and fluorides.
MP_HUBBARD_U = {
    "Co": 3.32,
    "Cr": 3.7,
    "Fe": 5.3,
    "Mn": 3.9,
    "Mo": 4.38,
    "Ni": 6.2,
    "V": 3.25,
    "W": 6.2,
}


def mp2020_corrections(frames: Sequence[Atoms]) -> NDArray[np.float64]:
    """MP2020 energy correction of each frame, eV (NaN where pymatgen rejects it)."""
    from pymatgen.entries.compatibility import (
        CompatibilityError,
        MaterialsProject2020Compatibility,
    )
    from pymatgen.entries.computed_entries import ComputedStructureEntry
    from pymatgen.io.ase import AseAtomsAdaptor

    compatibility = MaterialsProject2020Compatibility(check_potcar=False)
    corrections = []
    for atoms in frames:
        structure = AseAtomsAdaptor.get_structure(atoms)
        symbols = {element.symbol for element in structure.composition.elements}
        plus_u = bool(symbols & {"O", "F"}) and bool(symbols & set(MP_HUBBARD_U))
        parameters = {
            "run_type": "GGA+U" if plus_u else "GGA",
            "is_hubbard": plus_u,
            "hubbards": {s: MP_HUBBARD_U.get(s, 0.0) if plus_u else 0.0 for s in symbols},
            "potcar_spec": [],
        }
        entry = ComputedStructureEntry(
            structure, atoms.get_potential_energy(), parameters=parameters
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adjustments = compatibility.get_adjustments(entry)
            corrections.append(sum(a.value for a in adjustments))
        except CompatibilityError:
            corrections.append(np.nan)
    return np.array(corrections, dtype=np.float64)
