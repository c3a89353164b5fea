"""Example crystals for trying the pipeline with the EMT reference service."""

from __future__ import annotations

from ase import Atoms
from ase.build import bulk


def emt_crystals() -> list[Atoms]:
    """20 EMT-compatible crystals: fcc, bcc, hcp, L1_2, some strained or rattled."""
    structures = [
        bulk(s, "fcc", a=a)
        for s, a in [
            ("Cu", 3.6),
            ("Al", 4.05),
            ("Ni", 3.52),
            ("Pd", 3.9),
            ("Pt", 3.92),
            ("Ag", 4.09),
            ("Au", 4.08),
        ]
    ]
    structures += [bulk("Cu", "bcc", a=2.87), bulk("Ni", "bcc", a=2.8)]
    structures += [
        bulk(s, "hcp", a=a, c=1.633 * a) for s, a in [("Ni", 2.49), ("Cu", 2.55), ("Pt", 2.77)]
    ]
    for host, minority, a in [("Cu", "Au", 3.75), ("Ni", "Al", 3.57), ("Pt", "Al", 3.87)]:
        alloy = bulk(host, "fcc", a=a, cubic=True)
        alloy.symbols[0] = minority
        structures.append(alloy)
    strained = bulk("Cu", "fcc", a=3.6, cubic=True)
    strained.set_cell(strained.cell.array * [1.02, 0.99, 1.0], scale_atoms=True)
    rattled = bulk("Al", "fcc", a=4.05, cubic=True)
    rattled.rattle(0.03, seed=3)
    sheared = bulk("Ni", "fcc", a=3.52)
    sheared.set_cell(sheared.cell.array @ [[1, 0.02, 0], [0, 1, 0], [0, 0, 1]], scale_atoms=True)
    supercell = bulk("Pd", "fcc", a=3.9, cubic=True) * (2, 1, 1)
    supercell.rattle(0.02, seed=4)
    squeezed = bulk("Au", "fcc", a=3.95)
    structures += [strained, rattled, sheared, supercell, squeezed]
    for index, atoms in enumerate(structures):
        atoms.info["material_id"] = f"emt-{index:02d}-{atoms.get_chemical_formula()}"
    return structures
