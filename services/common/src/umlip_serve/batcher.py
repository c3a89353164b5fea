"""Dynamic batching: concurrent Calculate calls merged into one model call.

Handler threads :meth:`DynamicBatcher.submit` their (validated) batch and block; one
worker thread owns the model. It takes the oldest waiting request, then every other
request that is waiting or arrives within ``wait_s``, as long as the merged batch stays
within ``max_atoms``; runs one model call; and splits the results back. Model calls
never overlap, so adapters need not be thread-safe.

If a merged call raises, each of its requests is re-run alone, so one request's
failure (e.g. out of memory on a large batch) never fails another client's call.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from umlip_serve.batch import Property, StructureBatch, StructureOutput, StructureResult

logger = logging.getLogger("umlip_serve.batcher")

#: Runs the model on one batch: (batch, properties) -> one result per structure.
ModelCall = Callable[[StructureBatch, Sequence[Property]], list[StructureResult]]


@dataclass
class _Pending:
    batch: StructureBatch
    properties: tuple[Property, ...]
    future: Future[list[StructureResult]]


@dataclass
class BatcherStats:
    """Counters of a batcher's work (read them for logs and benchmarks)."""

    requests: int = 0
    model_calls: int = 0
    merged_calls: int = 0
    structures: int = 0


class BatcherClosedError(RuntimeError):
    """The batcher was shut down before this request ran."""


class DynamicBatcher:
    """Merges concurrent requests into model calls of at most ``max_atoms`` atoms.

    Args:
        model_call: runs the model (called from the worker thread only).
        max_atoms: most atoms in one merged model call.
        wait_s: how long to wait for more requests after the first one arrives.
        enabled: False runs every request on its own (no merging).
    """

    def __init__(
        self, model_call: ModelCall, *, max_atoms: int, wait_s: float, enabled: bool = True
    ) -> None:
        self._model_call = model_call
        self._max_atoms = max_atoms
        self._wait_s = wait_s
        self._enabled = enabled
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._carry: _Pending | None = None
        self._closed = False
        self.stats = BatcherStats()
        self._stats_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="umlip-batcher", daemon=True)
        self._worker.start()

    def submit(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Runs ``batch`` (possibly merged with others) and returns its results.

        Raises:
            BatcherClosedError: the batcher is shut down.
            Exception: whatever the model call raised when this request ran alone.
        """
        if self._closed:
            raise BatcherClosedError("the potential server is shutting down")
        future: Future[list[StructureResult]] = Future()
        self._queue.put(_Pending(batch, tuple(properties), future))
        return future.result()

    def close(self) -> None:
        """Stops the worker after the requests already queued have run."""
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _next_group(self) -> list[_Pending] | None:
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is None:
            return None
        group, atoms = [first], first.batch.n_atoms
        if not self._enabled:
            return group
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                remaining = deadline - time.monotonic()
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return group
            if item is None:
                self._queue.put(None)  # keep the stop signal for the outer loop
                return group
            if atoms + item.batch.n_atoms > self._max_atoms:
                self._carry = item
                return group
            group.append(item)
            atoms += item.batch.n_atoms

    def _run(self) -> None:
        while (group := self._next_group()) is not None:
            self._run_group(group)
        while True:  # fail whatever arrived after close()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.future.set_exception(BatcherClosedError("the potential server shut down"))

    def _run_group(self, group: list[_Pending]) -> None:
        with self._stats_lock:
            self.stats.requests += len(group)
            self.stats.model_calls += 1
            self.stats.merged_calls += len(group) > 1
            self.stats.structures += sum(p.batch.n_structures for p in group)
        if len(group) == 1:
            self._run_alone(group[0])
            return
        merged = StructureBatch.concatenate([p.batch for p in group])
        properties = tuple(dict.fromkeys(prop for p in group for prop in p.properties))
        logger.debug(
            "merged %d requests (%d structures, %d atoms) into one model call",
            len(group),
            merged.n_structures,
            merged.n_atoms,
        )
        try:
            results = self._model_call(merged, properties)
        except Exception:
            logger.warning("merged model call failed; re-running its %d requests alone", len(group))
            for pending in group:
                self._run_alone(pending)
            return
        start = 0
        for pending in group:
            stop = start + pending.batch.n_structures
            pending.future.set_result(
                [_keep(result, pending.properties) for result in results[start:stop]]
            )
            start = stop

    def _run_alone(self, pending: _Pending) -> None:
        try:
            pending.future.set_result(self._model_call(pending.batch, pending.properties))
        except Exception as error:  # handed to the waiting handler thread
            pending.future.set_exception(error)


def _keep(result: StructureResult, properties: tuple[Property, ...]) -> StructureResult:
    """Drops properties a request did not ask for (its call was merged with others)."""
    if not isinstance(result, StructureOutput):
        return result
    return StructureOutput(
        energy=result.energy if Property.ENERGY in properties else None,
        forces=result.forces if Property.FORCES in properties else None,
        stress=result.stress if Property.STRESS in properties else None,
    )
