"""The client-side batcher and the ASE calculator that hands its requests to it.

Each structure's ASE optimiser runs in its own worker thread. Its calculator does not
compute anything: it posts the structure to a :class:`LockstepBarrier` and blocks. The
thread driving the relaxation waits until every live worker is either blocked on a
request or finished, sends all pending requests as one batch, and hands the results
back. The numbers the calculator returns are exactly the evaluator's, so each structure
follows the same trajectory as ASE's optimiser run alone on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from numpy.typing import NDArray

from umlip_orchestrator.evaluation import Evaluation, StructureFailed

#: What a calculator asks for: a structure in, its evaluation (or failure) out.
Request = Callable[[Atoms], Evaluation | StructureFailed]


def checked_arrays(
    outcome: Evaluation, n_atoms: int
) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """(energy, forces, stress) of an evaluation of ``n_atoms`` atoms, as float64.

    Raises:
        ValueError: forces or stress have the wrong shape (or do not convert).
    """
    forces = np.array(outcome.forces, dtype=np.float64)
    stress = np.array(outcome.stress, dtype=np.float64)
    if forces.shape != (n_atoms, 3):
        raise ValueError(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)")
    if stress.shape != (6,):
        raise ValueError(f"stress has shape {stress.shape}, expected (6,) Voigt")
    return float(outcome.energy), forces, stress


class RelaxationAborted(BaseException):
    """Raised inside a worker thread when the driver stops the relaxation.

    A ``BaseException`` so that no ``except Exception`` in ASE or user code swallows it.
    """


def plain_copy(atoms: Atoms) -> Atoms:
    """Returns a copy of ``atoms`` without calculator and constraints.

    What goes to the potential: a constraint (e.g. FixSymmetry) on the copy would make
    an evaluator that calls ``get_forces()`` symmetrise twice.
    """
    copy = atoms.copy()
    copy.calc = None
    del copy.constraints
    return copy


class EvaluationCalculator(Calculator):
    """ASE calculator returning a potential's numbers obtained through ``request``.

    One instance per structure. ``request`` receives a constraint-free copy of the
    structure and returns its :class:`Evaluation` (or :class:`StructureFailed`, which is
    raised); with a :class:`LockstepBarrier` it blocks until the batch is evaluated.

    Attributes:
        last_atoms: the last structure evaluated successfully (a plain copy), or None.
        last_evaluation: its evaluation, or None.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "forces", "stress"]

    def __init__(self, request: Request) -> None:
        """Creates the calculator.

        Args:
            request: called with one structure per evaluation; may block.
        """
        super().__init__()
        self._request = request
        self.last_atoms: Atoms | None = None
        self.last_evaluation: Evaluation | None = None

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Fills ``self.results`` with energy (eV), forces ((n, 3) eV/Å), stress ((6,) eV/Å^3).

        Raises:
            StructureFailed: the potential could not evaluate the structure.
            ValueError: the evaluation has the wrong shape.
        """
        super().calculate(atoms, properties or ["energy"], system_changes)
        structure = plain_copy(self.atoms)
        outcome = self._request(structure)
        if isinstance(outcome, StructureFailed):
            raise outcome
        energy, forces, stress = checked_arrays(outcome, len(structure))
        self.results = {"energy": energy, "forces": forces, "stress": stress}
        self.last_atoms = structure
        self.last_evaluation = Evaluation(energy=energy, forces=forces.copy(), stress=stress.copy())


class LockstepBarrier:
    """Collects one request per live worker, then lets the driver evaluate them at once.

    Workers are identified by an integer slot. A worker is *running* from
    :meth:`register` until it posts a request or finishes; the driver evaluates only when
    no worker is running, so every batch holds every live structure.

    Each worker waits on its own event and the driver is woken only when the last
    running worker blocks, so one step costs O(workers) thread switches, not
    O(workers^2) as with one shared condition.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running: set[int] = set()
        self._pending: dict[int, Atoms] = {}
        self._responses: dict[int, Evaluation | StructureFailed] = {}
        self._wakeups: dict[int, threading.Event] = {}
        self._finished: list[tuple[int, Any]] = []
        self._aborted = False

    # --- worker side -------------------------------------------------------------

    def request(self, slot: int, atoms: Atoms) -> Evaluation | StructureFailed:
        """Posts ``atoms`` for evaluation and blocks until the driver answers.

        Raises:
            RelaxationAborted: the driver stopped the relaxation.
        """
        with self._lock:
            if self._aborted:
                raise RelaxationAborted
            wakeup = self._wakeups.setdefault(slot, threading.Event())
            wakeup.clear()
            self._pending[slot] = atoms
            self._running.discard(slot)
            if not self._running:
                self._idle.notify()
        wakeup.wait()
        with self._lock:
            if self._aborted:
                raise RelaxationAborted
            return self._responses.pop(slot)

    def finish(self, slot: int, outcome: Any) -> None:
        """Marks the worker done; ``outcome`` (unless None) goes to the driver."""
        with self._lock:
            self._running.discard(slot)
            self._pending.pop(slot, None)
            self._wakeups.pop(slot, None)
            if outcome is not None:
                self._finished.append((slot, outcome))
            if not self._running:
                self._idle.notify()

    def requester(self, slot: int) -> Request:
        """Returns the ``request`` callable for the calculator of worker ``slot``."""
        return lambda atoms: self.request(slot, atoms)

    # --- driver side -------------------------------------------------------------

    def register(self, slot: int) -> None:
        """Counts worker ``slot`` as running; call before starting its thread."""
        with self._lock:
            self._running.add(slot)

    def wait_until_idle(self) -> list[tuple[int, Any]]:
        """Blocks until no worker is running; returns (and clears) the finished outcomes."""
        with self._idle:
            self._idle.wait_for(lambda: not self._running)
            finished, self._finished = self._finished, []
            return finished

    def take_pending(self) -> dict[int, Atoms]:
        """Returns (and clears) the pending requests, by slot."""
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending

    def respond(self, outcomes: dict[int, Evaluation | StructureFailed]) -> None:
        """Hands the evaluated batch back and wakes its workers."""
        with self._lock:
            self._running.update(outcomes)
            self._responses.update(outcomes)
            wakeups = [self._wakeups[slot] for slot in outcomes]
        for wakeup in wakeups:
            wakeup.set()

    def abort(self) -> None:
        """Makes every blocked and future request raise :class:`RelaxationAborted`."""
        with self._lock:
            self._aborted = True
            wakeups = list(self._wakeups.values())
        for wakeup in wakeups:
            wakeup.set()
