"""The conformance kit every potential service runs on itself (pytest).

A service's test module subclasses :class:`ConformanceSuite` and provides a
``conformance_target`` fixture (class scope) returning a :class:`ConformanceTarget`:
a ``calculate`` function that reaches the real server process, the loaded adapter
in-process (for the input-immutability check) and a few supported structures. The
suite then proves, for that model:

- output shapes and types, results in request order for ragged batches;
- the caller's arrays are never modified (remote and in-process);
- batched results equal single-structure results;
- an unsupported element is reported in-band, and the rest of the batch succeeds;
- forces = -dE/dx and stress = (1/V) dE/d(strain), Voigt xx yy zz yz xz xy with ASE's
  sign, by central finite differences of the energy;
- invariance of energy, forces and stress under a rigid translation.

Two opt-in mixins prove that the stress check itself is sharp enough on a service's
structures: :class:`WrongStressConventionsCheck` (float32 models, whose finite
differences need loose tolerances) and :class:`StressResolutionCheck`. Structure
builders shared by several services (:func:`low_symmetry_crystals`,
:func:`strained_and_rattled`) live here too; the pytest fixtures and other test set-up
are in :mod:`umlip_serve.testing`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from ase import Atoms
from ase.build import bulk
from numpy.typing import NDArray

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve.potential import Potential
from umlip_wire.ase_bridge import atoms_to_batch
from umlip_wire.batch import (
    ALL_PROPERTIES,
    GPA_PER_EV_PER_A3,
    Property,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
)
from umlip_wire.codec import decode_response, encode_batch, encode_properties

#: Computes results for structures (through a real server, for the remote checks).
Calculate = Callable[[Sequence[Atoms]], list[StructureResult]]

#: Voigt index -> (i, j) of the 3x3 tensor, ASE order xx yy zz yz xz xy.
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def remote_calculate(target: str, timeout_s: float = 120.0) -> Calculate:
    """A plain Calculate caller over gRPC (no retries: a conformance test sees all errors)."""
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.PotentialServiceStub(channel)

    def calculate(structures: Sequence[Atoms]) -> list[StructureResult]:
        batch = atoms_to_batch(structures)
        request = pb.CalculateRequest(
            batch=encode_batch(batch), properties=encode_properties(ALL_PROPERTIES)
        )
        response = stub.Calculate(request, timeout=timeout_s)
        return decode_response(response, batch.atoms_per_structure.tolist())

    return calculate


@dataclass(frozen=True, kw_only=True)
class ConformanceTarget:
    """What the suite needs to test one potential service.

    Attributes:
        calculate: reaches the real server process (see :func:`remote_calculate`).
        potential: the adapter, loaded in-process, or None to skip the in-process check.
        structures: >= 3 supported structures of different sizes; include at least one
            periodic, low-symmetry (rattled, sheared) cell so every stress component is
            nonzero and distinct.
        unsupported: a structure containing an element the model does not support.
        atol_batch: absolute tolerance of batched vs single results (float32 models
            need ~1e-4 eV).
        fd_displacement: atom displacement for force finite differences, Å.
        fd_strain: strain step for stress finite differences.
        fd_atol_forces: tolerance of forces vs finite differences, eV/Å.
        fd_atol_stress: tolerance of stress vs finite differences, eV/Å^3.
    """

    calculate: Calculate
    potential: Potential | None
    structures: Sequence[Atoms]
    unsupported: Atoms
    atol_batch: float = 1e-8
    fd_displacement: float = 1e-4
    fd_strain: float = 1e-5
    fd_atol_forces: float = 1e-4
    fd_atol_stress: float = 1e-5


def _ok(result: StructureResult) -> StructureOutput:
    assert isinstance(result, StructureOutput), f"structure failed: {result}"
    return result


def _energy(target: ConformanceTarget, structures: Sequence[Atoms]) -> NDArray[np.float64]:
    return np.array([_ok(r).energy for r in target.calculate(structures)], dtype=np.float64)


def strained(atoms: Atoms, voigt: int, amount: float) -> Atoms:
    """``atoms`` under a symmetric strain with Voigt component ``voigt`` = ``amount``.

    Shear components use engineering strain: e_ij = e_ji = amount / 2.
    """
    i, j = VOIGT_PAIRS[voigt]
    strain = np.zeros((3, 3))
    if i == j:
        strain[i, i] = amount
    else:
        strain[i, j] = strain[j, i] = amount / 2
    deformed = atoms.copy()
    deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return deformed


def stress_by_finite_differences(
    calculate: Calculate, atoms: Atoms, strain: float
) -> NDArray[np.float64]:
    """(1/V) dE/d(strain) of periodic ``atoms``, Voigt order, by central differences of
    the energy with strain step ``strain`` (12 structures in one call)."""
    deformed = [strained(atoms, v, s * strain) for v in range(6) for s in (1, -1)]
    energies = np.array([_ok(r).energy for r in calculate(deformed)], dtype=np.float64)
    pairs = energies.reshape(6, 2)
    return (pairs[:, 0] - pairs[:, 1]) / (2 * strain) / atoms.get_volume()


def wrong_conventions(stress: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Stresses an adapter with a sign, Voigt order or unit bug would report."""
    wrong = {"opposite sign": -stress, "GPa not eV/Å^3": stress * GPA_PER_EV_PER_A3}
    for order in itertools.permutations((3, 4, 5)):
        if order != (3, 4, 5):
            permuted = stress[[0, 1, 2, *order]]
            wrong[f"shear order {order}"] = permuted
            wrong[f"shear order {order}, opposite sign"] = -permuted
    return wrong


def low_symmetry_crystals(nacl_lattice: float = 5.64) -> list[Atoms]:
    """Low-symmetry cells of 8, 2 and 16 atoms with distinct, nonzero shear stresses.

    Sheared, rattled rock-salt NaCl (lattice constant ``nacl_lattice``, Å), a deformed,
    rattled zinc-blende GaAs primitive cell written left-handed (negative determinant)
    and a rattled 2x1x1 diamond Si supercell; always the same (seeded) structures.
    """
    rng = np.random.default_rng(7)
    nacl = bulk("NaCl", "rocksalt", a=nacl_lattice, cubic=True)
    shear = np.array([[1.01, 0.0, 0.0], [0.01, 0.99, 0.0], [0.03, 0.08, 1.0]])
    nacl.set_cell(nacl.cell.array @ shear, scale_atoms=True)
    nacl.positions += rng.normal(scale=0.05, size=nacl.positions.shape)
    gaas = bulk("GaAs", "zincblende", a=5.75)
    deformation = np.array([[1.0, 0.05, 0.0], [0.0, 1.01, 0.02], [0.0, 0.0, 0.99]])
    gaas.set_cell(gaas.cell.array[[1, 0, 2]] @ deformation, scale_atoms=True)
    gaas.positions += rng.normal(scale=0.04, size=gaas.positions.shape)
    silicon = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 1, 1)
    silicon.positions += rng.normal(scale=0.04, size=silicon.positions.shape)
    return [nacl, gaas, silicon]


#: Strain applied by :func:`strained_and_rattled` so that all stress components are
#: large and distinct.
DEFORMATION = np.array([[0.97, 0.02, 0.01], [0.0, 0.99, 0.03], [0.015, 0.0, 1.02]])


def strained_and_rattled(frames: Sequence[Atoms]) -> list[Atoms]:
    """Copies of ``frames`` (calculators dropped) under :data:`DEFORMATION`, rattled by
    0.03 Å (seeded: always the same structures for the same frames)."""
    rng = np.random.default_rng(7)
    structures = [atoms.copy() for atoms in frames]
    for atoms in structures:
        atoms.calc = None
        atoms.set_cell(atoms.cell.array @ DEFORMATION, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    return structures


class ConformanceSuite:
    """Subclass in a service's tests and provide a class-scoped ``conformance_target``."""

    def test_shapes_and_units(self, conformance_target: ConformanceTarget) -> None:
        structures = conformance_target.structures
        results = conformance_target.calculate(structures)
        assert len(results) == len(structures)
        for atoms, result in zip(structures, results, strict=True):
            output = _ok(result)
            assert isinstance(output.energy, float) and np.isfinite(output.energy)
            assert output.forces is not None and output.forces.shape == (len(atoms), 3)
            assert output.stress is not None and output.stress.shape == (6,)
            assert np.all(np.isfinite(output.forces)) and np.all(np.isfinite(output.stress))

    def test_ragged_batch_keeps_request_order(self, conformance_target: ConformanceTarget) -> None:
        structures = list(conformance_target.structures)
        assert len({len(a) for a in structures}) > 1, "give structures of different sizes"
        forward = conformance_target.calculate(structures)
        backward = conformance_target.calculate(structures[::-1])[::-1]
        for a, b in zip(forward, backward, strict=True):
            np.testing.assert_allclose(
                _ok(a).forces, _ok(b).forces, atol=conformance_target.atol_batch
            )

    def test_inputs_untouched(self, conformance_target: ConformanceTarget) -> None:
        structures = [a.copy() for a in conformance_target.structures]
        before = [(a.numbers.copy(), a.positions.copy(), a.cell.array.copy()) for a in structures]
        conformance_target.calculate(structures)
        for atoms, (numbers, positions, cell) in zip(structures, before, strict=True):
            assert np.array_equal(atoms.numbers, numbers)
            assert np.array_equal(atoms.positions, positions)
            assert np.array_equal(atoms.cell.array, cell)
        if conformance_target.potential is None:
            return
        batch = atoms_to_batch(structures)
        copies = [
            batch.atomic_numbers.copy(),
            batch.positions.copy(),
            batch.cells.copy(),
            batch.pbc.copy(),
        ]
        conformance_target.potential.calculate(batch, ALL_PROPERTIES)
        arrays = [batch.atomic_numbers, batch.positions, batch.cells, batch.pbc]
        for array, copy in zip(arrays, copies, strict=True):
            assert np.array_equal(array, copy), "calculate() modified its input batch"

    def test_batched_equals_single(self, conformance_target: ConformanceTarget) -> None:
        structures = conformance_target.structures
        batched = conformance_target.calculate(structures)
        tol = conformance_target.atol_batch
        for atoms, together in zip(structures, batched, strict=True):
            (alone,) = conformance_target.calculate([atoms])
            a, b = _ok(together), _ok(alone)
            np.testing.assert_allclose(a.energy, b.energy, atol=tol * max(1, len(atoms)))
            np.testing.assert_allclose(a.forces, b.forces, atol=tol)
            np.testing.assert_allclose(a.stress, b.stress, atol=tol)

    def test_unsupported_element_in_band(self, conformance_target: ConformanceTarget) -> None:
        good = conformance_target.structures[0]
        results = conformance_target.calculate([good, conformance_target.unsupported, good])
        assert isinstance(results[1], StructureError)
        assert results[1].code is StructureErrorCode.UNSUPPORTED_ELEMENT
        assert "not supported" in results[1].message
        np.testing.assert_allclose(_ok(results[0]).energy, _ok(results[2]).energy)

    def test_non_periodic_structure_rules(self, conformance_target: ConformanceTarget) -> None:
        """The harness's rule, through the server: stress of a structure that is not
        periodic in all three directions is an in-band error; energy and forces are
        computed unless the model declares ``requires_full_periodicity``."""
        periodic = next(a for a in conformance_target.structures if a.pbc.all())
        cluster = periodic.copy()
        cluster.pbc = False
        cluster.center(vacuum=6.0)
        good, bad = conformance_target.calculate([periodic, cluster])
        _ok(good)
        assert isinstance(bad, StructureError)
        assert bad.code is StructureErrorCode.INVALID_STRUCTURE
        assert "periodic in all three directions" in bad.message
        potential = conformance_target.potential
        if potential is not None and not potential.requires_full_periodicity:
            batch = atoms_to_batch([cluster])
            (output,) = potential.calculate(batch, (Property.ENERGY, Property.FORCES))
            assert _ok(output).forces.shape == (len(cluster), 3)

    def test_forces_are_energy_gradient(self, conformance_target: ConformanceTarget) -> None:
        h = conformance_target.fd_displacement
        for atoms in conformance_target.structures:
            forces = _ok(conformance_target.calculate([atoms])[0]).forces
            assert forces is not None
            probes = [(a, c) for a in range(min(len(atoms), 3)) for c in range(3)]
            displaced = []
            for a, c in probes:
                for sign in (1, -1):
                    moved = atoms.copy()
                    moved.positions[a, c] += sign * h
                    displaced.append(moved)
            energies = _energy(conformance_target, displaced).reshape(-1, 2)
            numeric = -(energies[:, 0] - energies[:, 1]) / (2 * h)
            analytic = np.array([forces[a, c] for a, c in probes])
            np.testing.assert_allclose(analytic, numeric, atol=conformance_target.fd_atol_forces)

    def test_stress_sign_and_voigt_order(self, conformance_target: ConformanceTarget) -> None:
        h = conformance_target.fd_strain
        periodic = [a for a in conformance_target.structures if a.pbc.all()]
        assert periodic, "give at least one periodic structure"
        for atoms in periodic:
            stress = _ok(conformance_target.calculate([atoms])[0]).stress
            assert stress is not None
            numeric = stress_by_finite_differences(conformance_target.calculate, atoms, h)
            np.testing.assert_allclose(stress, numeric, atol=conformance_target.fd_atol_stress)

    def test_translation_invariance(self, conformance_target: ConformanceTarget) -> None:
        structures = conformance_target.structures
        moved = []
        for atoms in structures:
            shifted = atoms.copy()
            shifted.positions += np.array([0.37, -0.21, 0.52])
            moved.append(shifted)
        tol = conformance_target.atol_batch
        for a, b in zip(
            conformance_target.calculate(structures),
            conformance_target.calculate(moved),
            strict=True,
        ):
            np.testing.assert_allclose(_ok(a).energy, _ok(b).energy, atol=max(tol, 1e-6))
            np.testing.assert_allclose(_ok(a).forces, _ok(b).forces, atol=max(tol, 1e-5))
            np.testing.assert_allclose(_ok(a).stress, _ok(b).stress, atol=max(tol, 1e-7))


class WrongStressConventionsCheck:
    """Mixin beside :class:`ConformanceSuite`: on the target's structures, the stress
    check (tolerance ``fd_atol_stress``, step ``fd_strain``) would still fail for a
    wrong sign, a wrong Voigt order or a GPa/eV/Å^3 mix-up; for float32 models, whose
    finite-difference tolerances are loose.

    Every wrong convention must miss the finite-difference stress by at least five
    times the tolerance in some structure.
    """

    def test_stress_check_catches_wrong_conventions(
        self, conformance_target: ConformanceTarget
    ) -> None:
        h = conformance_target.fd_strain
        tol = conformance_target.fd_atol_stress
        worst: dict[str, float] = {}
        for atoms in conformance_target.structures:
            result = conformance_target.calculate([atoms])[0]
            assert isinstance(result, StructureOutput) and result.stress is not None
            numeric = stress_by_finite_differences(conformance_target.calculate, atoms, h)
            np.testing.assert_allclose(result.stress, numeric, atol=tol)
            for name, wrong in wrong_conventions(result.stress).items():
                worst[name] = max(worst.get(name, 0.0), float(np.abs(wrong - numeric).max()))
        blind = {name: error for name, error in worst.items() if error < 5 * tol}
        assert not blind, f"the stress check would miss these bugs: {blind}"


class StressResolutionCheck:
    """Mixin beside :class:`ConformanceSuite`: the target's structures have stresses
    large and distinct enough for the stress check."""

    def test_stresses_resolve_sign_and_voigt_order(
        self, conformance_target: ConformanceTarget
    ) -> None:
        """The structures' stresses are large and distinct enough for the stress check.

        Every component exceeds the tolerance (a sign error cannot hide), and every pair
        of components differs by more than twice the tolerance in some structure (nor
        can two swapped Voigt components).
        """
        tol = conformance_target.fd_atol_stress
        results = conformance_target.calculate(conformance_target.structures)
        stresses = np.array([r.stress for r in results if isinstance(r, StructureOutput)])
        assert stresses.shape == (len(results), 6)
        assert np.abs(stresses).min() > 4 * tol
        gaps = np.abs(stresses[:, :, None] - stresses[:, None, :]).max(axis=0)
        assert gaps[np.triu_indices(6, 1)].min() > 2 * tol
