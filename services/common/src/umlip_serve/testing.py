"""Test set-up shared by the potential services' own test suites (pytest).

Not part of the server: nothing in the serving path imports this module, and it needs
pytest, which comes with the harness's ``test`` extra (``umlip-serve[test]``). A
service's ``conftest.py`` builds its session fixtures from the factories here, e.g.::

    service = service_fixture("umlip_chgnet", start_timeout_s=300)
    remote = remote_fixture(timeout_s=600)
    mptrj_frames = frames_fixture(shared_data(__file__) / "mptrj-random-1k.xyz")
    potential = potential_fixture(lambda: CHGNetPotential(Settings()))

and its test modules use the helpers (agreement with an upstream calculator, errors
against DFT labels, in-process adapter checks, offline servers and their start-up
failures). What is specific to a model (tolerances, structures, checkpoints) stays in
the service's tests.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator
from ase.io import read
from numpy.typing import NDArray

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_serve.conformance import Calculate, remote_calculate
from umlip_serve.passes import EdgeBudget
from umlip_serve.potential import Potential
from umlip_wire.ase_bridge import atoms_to_batch
from umlip_wire.batch import (
    ALL_PROPERTIES,
    GPA_PER_EV_PER_A3,
    Property,
    StructureOutput,
    StructureResult,
)
from umlip_wire.process import ServiceProcess

#: Sends any HTTP(S) download to a closed port on this machine: it fails at once.
#: Both spellings are set (lower case wins in urllib) and no host bypasses the proxy.
NO_NETWORK = {
    **{name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")},
    **{name.lower(): "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")},
    "NO_PROXY": "",
    "no_proxy": "",
}


def shared_data(test_file: str | Path) -> Path:
    """The shared reference data, ``<repo>/../shared/data`` (see its README), seen from
    ``test_file``, a file directly in ``<repo>/services/<model>/tests/``."""
    return Path(test_file).resolve().parents[3].parent / "shared" / "data"


# --- session fixtures ------------------------------------------------------------------


def service_fixture(module: str, *, start_timeout_s: float = 300.0) -> Any:
    """A session fixture ``service``: a real server of ``module`` (this environment's
    Python) on a free loopback port."""

    @pytest.fixture(scope="session", name="service")
    def service() -> Iterator[ServiceProcess]:
        """A real server (this environment's Python) on a free loopback port."""
        with ServiceProcess(
            python=sys.executable, module=module, start_timeout_s=start_timeout_s
        ) as process:
            yield process

    return service


def remote_fixture(*, timeout_s: float = 600.0) -> Any:
    """A session fixture ``remote``: Calculate through the ``service`` fixture's server
    (energy, forces and stress)."""

    @pytest.fixture(scope="session", name="remote")
    def remote(service: ServiceProcess) -> Calculate:
        """Calculate through the real server (energy, forces and stress)."""
        return remote_calculate(service.target, timeout_s=timeout_s)

    return remote


def frames_fixture(path: Path) -> Any:
    """A session fixture: every frame of the extended-XYZ file ``path`` (fails when the
    shared data is absent)."""

    @pytest.fixture(scope="session")
    def frames() -> list[Atoms]:
        """Frames with DFT labels (fails when the shared data is absent)."""
        if not path.exists():
            raise FileNotFoundError(f"reference data {path} not found")
        return read(path, index=":")

    return frames


def potential_fixture(build: Callable[..., Potential], *, scope: str = "session") -> Any:
    """A fixture ``potential``: the adapter ``build(...)`` returns, loaded in this process.

    ``build``'s parameters are fixture names (e.g. ``lambda tiny_model: ...``).
    """

    @functools.wraps(build, assigned=())  # its parameters, the fixtures it needs
    def potential(*args: Any, **kwargs: Any) -> Potential:
        """The adapter loaded in this process."""
        loaded = build(*args, **kwargs)
        loaded.load()
        return loaded

    return pytest.fixture(potential, scope=scope, name="potential")


# --- services with a checkpoint file, offline -------------------------------------------


def offline_service(
    module: str, checkpoint: str | Path, *, dtype: str, start_timeout_s: float = 180.0, **env: str
) -> ServiceProcess:
    """A server process of ``module`` (this environment's Python) serving ``checkpoint``
    in ``dtype``, with :data:`NO_NETWORK` and any further variables ``env``."""
    return ServiceProcess(
        python=sys.executable,
        module=module,
        env={"UMLIP_CHECKPOINT": str(checkpoint), "UMLIP_DTYPE": dtype, **NO_NETWORK, **env},
        start_timeout_s=start_timeout_s,
    )


def model_info(target: str, timeout_s: float = 30.0) -> pb.GetModelInfoResponse:
    """The server's GetModelInfo answer."""
    with grpc.insecure_channel(target) as channel:
        return pb_grpc.PotentialServiceStub(channel).GetModelInfo(
            pb.GetModelInfoRequest(), timeout=timeout_s
        )


def run_entrypoint(
    module: str, env: dict[str, str], log_path: Path, timeout_s: float = 300.0
) -> tuple[int, str]:
    """Runs ``python -m module`` (port 0, one OpenMP thread, ``env`` on top of this
    process's environment) until it exits: its return code and its log.

    For servers that must fail at start-up: ServiceProcess.start() would keep polling
    health until its deadline after the process has exited.
    """
    full_env = {**os.environ, "UMLIP_PORT": "0", "OMP_NUM_THREADS": "1", **env}
    with log_path.open("wb") as log:
        process = subprocess.run(
            [sys.executable, "-m", module], env=full_env, stdout=log, stderr=log, timeout=timeout_s
        )
    return process.returncode, log_path.read_text()


def log_seconds(log: str, start: str, end: str) -> float:
    """Seconds between the first log lines holding ``start`` and ``end``."""
    started, ended = (_log_time(log, marker) for marker in (start, end))
    return (ended - started).total_seconds()


def _log_time(log: str, marker: str) -> datetime:
    line = next(line for line in log.splitlines() if marker in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


# --- in-process adapter checks ----------------------------------------------------------


def assert_only_requested_properties(potential: Potential) -> None:
    """Energy asked alone comes alone (silicon)."""
    silicon = bulk("Si", "diamond", a=5.43)
    (result,) = potential.calculate(atoms_to_batch([silicon]), (Property.ENERGY,))
    assert isinstance(result, StructureOutput)
    assert result.energy is not None and result.forces is None and result.stress is None


def assert_split_passes_agree(potential: Any) -> None:
    """Three rattled silicon cells give the same results in ``potential``'s passes as in
    one structure per pass (a copy sharing the model, with an edge budget of 1)."""
    structures = []
    for seed, a in enumerate((5.40, 5.43, 5.47)):
        atoms = bulk("Si", "diamond", a=a, cubic=True)
        atoms.rattle(0.03, seed=seed)
        structures.append(atoms)
    batch = atoms_to_batch(structures)
    together = potential.calculate(batch, ALL_PROPERTIES)
    split = copy.copy(potential)  # shares the loaded model
    split.passes = EdgeBudget(1, potential.name)  # one structure per pass
    apart = split.calculate(batch, ALL_PROPERTIES)
    for a, b in zip(together, apart, strict=True):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        np.testing.assert_allclose(a.energy, b.energy, atol=1e-4)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-4)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-6)


def assert_passes_survive_running_out_of_memory(
    potential: Any,
    error_type: type[BaseException],
    structures: Sequence[Atoms] | None = None,
) -> None:
    """Four structures (default: rattled silicon cells), where any pass of more than one
    runs out of memory (``error_type``, e.g. ``torch.cuda.OutOfMemoryError``, raised
    before the pass runs): the adapter still answers every structure as in its normal
    passes, and its edge budget has shrunk for the passes that follow."""
    if structures is None:
        structures = []
        for seed, a in enumerate((5.40, 5.43, 5.45, 5.47)):
            atoms = bulk("Si", "diamond", a=a, cubic=True)
            atoms.rattle(0.03, seed=seed)
            structures.append(atoms)
    batch = atoms_to_batch(structures)
    reference = potential.calculate(batch, ALL_PROPERTIES)
    budget, before = 10**9, potential.passes.edges
    assert len(structures) > 2

    class SmallDevice(EdgeBudget):
        """The adapter's own passes, on a device that holds one structure at a time."""

        def run(self, sizes, run_pass):  # type: ignore[no-untyped-def]
            def on_small_device(chunk: list[int]) -> None:
                if len(chunk) > 1:
                    raise error_type("CUDA out of memory. Tried to allocate 2.00 GiB")
                run_pass(chunk)

            super().run(sizes, on_small_device)

    small = copy.copy(potential)  # shares the loaded model
    small.passes = SmallDevice(budget, potential.name)
    results = small.calculate(batch, ALL_PROPERTIES)
    assert small.passes.edges < budget
    for a, b in zip(reference, results, strict=True):
        assert isinstance(a, StructureOutput) and isinstance(b, StructureOutput)
        np.testing.assert_allclose(a.energy, b.energy, atol=1e-4)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-4)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-6)
    assert potential.passes.edges == before  # the copy's budget is its own


def assert_molecule_and_crystal_in_one_batch(potential: Potential) -> list[StructureResult]:
    """A molecule's energy and forces come with a crystal's in one batch, and the
    crystal's energy is its energy alone. Returns the batch's results (water, silicon)."""
    water = molecule("H2O")
    silicon = bulk("Si", "diamond", a=5.43)
    energy_forces = potential.calculate(
        atoms_to_batch([water, silicon]), (Property.ENERGY, Property.FORCES)
    )
    assert all(isinstance(r, StructureOutput) for r in energy_forces)
    (alone,) = potential.calculate(atoms_to_batch([silicon]), ALL_PROPERTIES)
    assert isinstance(alone, StructureOutput)
    np.testing.assert_allclose(alone.energy, energy_forces[1].energy, atol=1e-5)
    return energy_forces


# --- agreement with references ----------------------------------------------------------


def assert_matches_calculator(
    results: Sequence[StructureResult],
    frames: Sequence[Atoms],
    calculator: Calculator,
    *,
    energy_atol_per_atom: float,
    forces_atol: float,
    stress_atol: float,
) -> None:
    """Each result is what ``calculator`` (the model's own ASE calculator) gives for its
    frame: energy within ``energy_atol_per_atom`` times the number of atoms, eV; forces,
    eV/Å; stress (Voigt, ASE's sign), eV/Å^3."""
    for atoms, result in zip(frames, results, strict=True):
        assert isinstance(result, StructureOutput)
        reference = atoms.copy()
        reference.calc = calculator
        np.testing.assert_allclose(
            result.energy, reference.get_potential_energy(), atol=energy_atol_per_atom * len(atoms)
        )
        np.testing.assert_allclose(result.forces, reference.get_forces(), atol=forces_atol)
        np.testing.assert_allclose(
            result.stress, reference.get_stress(voigt=True), atol=stress_atol
        )


@dataclass(frozen=True)
class DftErrors:
    """Mean absolute errors of served results against DFT labels.

    Attributes:
        energy_mae: eV/atom.
        force_mae: eV/Å, over all components.
        stress_mae: GPa, over all Voigt components.
        flipped_stress_mae: GPa, as ``stress_mae`` with the served stress's sign flipped.
    """

    energy_mae: float
    force_mae: float
    stress_mae: float
    flipped_stress_mae: float

    @classmethod
    def of(
        cls,
        results: Sequence[StructureResult],
        frames: Sequence[Atoms],
        energy_corrections: NDArray[np.float64] | None = None,
        *,
        skip_nan_energies: bool = False,
    ) -> DftErrors:
        """Errors of ``results`` against the labels of ``frames`` (all must be outputs).

        Args:
            energy_corrections: added to each frame's DFT energy, eV (e.g. MP2020).
            skip_nan_energies: leave frames whose corrected DFT energy is NaN out of the
                energy MAE (otherwise the MAE is NaN).
        """
        assert all(isinstance(r, StructureOutput) for r in results)
        outputs = [r for r in results if isinstance(r, StructureOutput)]
        n_atoms = np.array([len(a) for a in frames])
        energy = np.array([r.energy for r in outputs])
        dft_energy = np.array([a.get_potential_energy() for a in frames])
        if energy_corrections is not None:
            dft_energy = dft_energy + energy_corrections
        mean = np.nanmean if skip_nan_energies else np.mean
        force_errors = np.concatenate(
            [np.abs(r.forces - a.get_forces()) for a, r in zip(frames, outputs, strict=True)]
        )
        stress = np.array([r.stress for r in outputs])
        dft_stress = np.array([a.get_stress(voigt=True) for a in frames])
        return cls(
            energy_mae=float(mean(np.abs(energy - dft_energy) / n_atoms)),
            force_mae=float(force_errors.mean()),
            stress_mae=float(np.abs(stress - dft_stress).mean() * GPA_PER_EV_PER_A3),
            flipped_stress_mae=float(np.abs(stress + dft_stress).mean() * GPA_PER_EV_PER_A3),
        )

    def __str__(self) -> str:
        return (
            f"energy MAE {self.energy_mae * 1e3:.1f} meV/atom, force MAE {self.force_mae:.3f} "
            f"eV/Å, stress MAE {self.stress_mae:.3f} GPa "
            f"(flipped sign: {self.flipped_stress_mae:.3f} GPa)"
        )
