"""The deformation set against pymatgen's conventions."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.constraints import FixAtoms, FixSymmetry
from pymatgen.core.elasticity.strain import Deformation as PmgDeformation
from pymatgen.core.elasticity.strain import DeformedStructureSet
from pymatgen.io.ase import AseAtomsAdaptor

from umlip_orchestrator.elastic import (
    Deformation,
    StrainSettings,
    deform_atoms,
    deformation_set,
    strain_to_voigt,
)

# Matrix position (upper triangle) of Voigt xx yy zz yz xz xy, written out here on purpose.
PAIRS = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def _triclinic() -> Atoms:
    rng = np.random.default_rng(0)
    cell = np.array([[4.1, 0.2, -0.3], [0.5, 3.7, 0.1], [-0.4, 0.6, 5.2]])
    return Atoms("NaClO", cell=cell, scaled_positions=rng.random((3, 3)), pbc=True)


def test_default_set_has_24_cells_4_per_component() -> None:
    deformations = deformation_set()
    assert len(deformations) == 24 == StrainSettings().n_cells
    components = [d.component for d in deformations]
    assert components == [c for c in range(6) for _ in range(4)]
    for d in deformations:
        expected = (-0.01, -0.005, 0.005, 0.01) if d.component < 3 else (-0.06, -0.03, 0.03, 0.06)
        assert d.magnitude in expected


def test_deformation_convention_matches_pymatgen_from_index_amount() -> None:
    for d in deformation_set(StrainSettings(convention="deformation")):
        i, j = PAIRS[d.component]
        reference = PmgDeformation.from_index_amount((i, j), d.magnitude)
        np.testing.assert_array_equal(d.gradient, np.asarray(reference))
        np.testing.assert_allclose(
            d.green_lagrange_strain, np.asarray(reference.green_lagrange_strain), atol=1e-15
        )
        a = d.magnitude
        strain = d.green_lagrange_strain
        if d.component < 3:
            # Green-Lagrange: E_ii = a + a^2/2, nothing else.
            assert strain[i, i] == pytest.approx(a + a**2 / 2, abs=1e-15)
            assert np.count_nonzero(np.abs(strain) > 1e-15) == 1
        else:
            # One off-diagonal entry F[i, j] = a: E_ij = a/2, plus E_jj = a^2/2.
            assert strain[i, j] == strain[j, i] == pytest.approx(a / 2, abs=1e-15)
            assert strain[j, j] == pytest.approx(a**2 / 2, abs=1e-15)
            assert strain_to_voigt(strain)[d.component] == pytest.approx(a, abs=1e-15)


def test_strain_convention_matches_pymatgen_deformed_structure_set() -> None:
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]])
    reference = DeformedStructureSet(structure).deformations
    # pymatgen order: xx, yy, zz (normal), then xy, xz, yz (shear), 4 magnitudes each.
    pmg_component_order = [0, 1, 2, 5, 4, 3]
    ours = {
        (d.component, d.magnitude): d for d in deformation_set(StrainSettings(convention="strain"))
    }
    assert len(ours) == len(reference) == 24
    for k, ref in enumerate(reference):
        component = pmg_component_order[k // 4]
        magnitude = (
            [-0.01, -0.005, 0.005, 0.01][k % 4]
            if component < 3
            else [-0.06, -0.03, 0.03, 0.06][k % 4]
        )
        d = ours[(component, magnitude)]
        np.testing.assert_allclose(d.gradient, np.asarray(ref), atol=1e-14)
        expected = np.zeros((3, 3))
        i, j = PAIRS[component]
        expected[i, j] = expected[j, i] = magnitude
        np.testing.assert_allclose(d.green_lagrange_strain, expected, atol=1e-14)


def test_deform_atoms_matches_pymatgen_apply_to_structure() -> None:
    atoms = _triclinic()
    before = atoms.get_positions().copy()
    structure = AseAtomsAdaptor.get_structure(atoms)
    for convention in ("deformation", "strain"):
        for d in deformation_set(StrainSettings(convention=convention)):
            deformed = deform_atoms(atoms, d)
            np.testing.assert_allclose(deformed.cell[:], atoms.cell[:] @ d.gradient.T, atol=1e-12)
            np.testing.assert_allclose(
                deformed.get_scaled_positions(wrap=False),
                atoms.get_scaled_positions(wrap=False),
                atol=1e-12,
            )
            reference = PmgDeformation(d.gradient).apply_to_structure(structure)
            np.testing.assert_allclose(deformed.cell[:], reference.lattice.matrix, atol=1e-12)
            np.testing.assert_allclose(deformed.get_positions(), reference.cart_coords, atol=1e-10)
            # The cell's own Green-Lagrange strain is the deformation's.
            metric_0 = atoms.cell[:] @ atoms.cell[:].T
            np.testing.assert_allclose(
                deformed.cell[:] @ deformed.cell[:].T - metric_0,
                2 * atoms.cell[:] @ d.green_lagrange_strain @ atoms.cell[:].T,
                atol=1e-12,
            )
    np.testing.assert_array_equal(atoms.get_positions(), before)


def test_deform_atoms_drops_fix_symmetry_keeps_other_constraints() -> None:
    atoms = Atoms(
        "Cu4",
        cell=np.eye(3) * 3.6,
        pbc=True,
        scaled_positions=[[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
    )
    atoms.set_constraint([FixSymmetry(atoms), FixAtoms(indices=[0])])
    shear = deformation_set()[-1]  # xy, +6 %
    deformed = deform_atoms(atoms, shear)
    assert [type(c).__name__ for c in deformed.constraints] == ["FixAtoms"]
    # The cell was not symmetrised back (FixSymmetry would have undone the shear).
    np.testing.assert_allclose(deformed.cell[:], atoms.cell[:] @ shear.gradient.T, atol=1e-12)
    # A raw gradient works too.
    np.testing.assert_allclose(
        deform_atoms(atoms, np.eye(3) * 1.01).get_volume(), atoms.get_volume() * 1.01**3
    )


def test_custom_settings_and_record() -> None:
    settings = StrainSettings(normal=[-0.002, 0.002], shear=(0.01,), convention="strain")
    assert settings.normal == (-0.002, 0.002)
    assert settings.n_cells == len(deformation_set(settings)) == 9
    assert settings.as_dict() == {
        "normal": [-0.002, 0.002],
        "shear": [0.01],
        "convention": "strain",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"normal": (0.0, 0.01)},
        {"normal": (float("nan"),)},
        {"shear": (float("inf"),)},
        {"shear": (0.2,)},
        {"normal": (-0.25,)},
        {"normal": ()},
        {"shear": (0.01, 0.01)},
        {"normal": ("a",)},
        {"convention": "lagrangian"},
    ],
)
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        StrainSettings(**kwargs)


def test_bad_deformation_raises() -> None:
    with pytest.raises(ValueError):
        Deformation(6, 0.01, np.eye(3))
    with pytest.raises(ValueError):
        Deformation(0, 0.01, np.eye(2))
    with pytest.raises(ValueError):
        Deformation(0, 0.01, -np.eye(3))
    d = Deformation(0, 0.01, np.eye(3))
    with pytest.raises(ValueError):
        d.gradient[0, 0] = 2.0  # read-only
