"""Dynamic batching: concurrent Calculate calls merged into one model call.

Handler threads :meth:`DynamicBatcher.submit` their (validated) batch and block; one
worker thread owns the model. It takes the oldest waiting request, then every other
request that is waiting or arrives within ``wait_s``, as long as the merged batch stays
within ``max_atoms``; runs one model call; and splits the results back. Model calls
never overlap, so adapters need not be thread-safe.

Every model call, merged or not, goes through :func:`~umlip_serve.validation.check_results`
(one result per structure, requested properties only, finite values). If a merged call
raises or returns the wrong number of results, each of its requests is re-run alone, so
one request's failure (e.g. out of memory on a large batch, a short result list) never
fails or shifts another client's results.

Work is bounded: :meth:`DynamicBatcher.submit` refuses a request with
:class:`~umlip_wire.errors.ServerBusyError` (RESOURCE_EXHAUSTED) while more than
``max_queued_atoms`` atoms are waiting or running, and a request whose call is no longer
active (deadline passed, client cancelled) is dropped before the model runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from umlip_serve.validation import check_results
from umlip_wire.batch import Property, StructureBatch, StructureResult
from umlip_wire.errors import CallNotActiveError, ServerBusyError

logger = logging.getLogger("umlip_serve.batcher")

#: Runs the model on one batch: (batch, properties) -> one result per structure.
ModelCall = Callable[[StructureBatch, Sequence[Property]], list[StructureResult]]
#: Whether the caller still wants the answer (grpc's ``context.is_active``).
IsActive = Callable[[], bool]


def _always_active() -> bool:
    return True


@dataclass
class _Pending:
    batch: StructureBatch
    properties: tuple[Property, ...]
    future: Future[list[StructureResult]]
    is_active: IsActive


@dataclass
class BatcherStats:
    """Counters of a batcher's work (read them for logs and benchmarks)."""

    requests: int = 0
    model_calls: int = 0
    merged_calls: int = 0
    structures: int = 0
    dropped: int = 0
    shed: int = 0


class BatcherClosedError(RuntimeError):
    """The batcher was shut down before this request ran."""


class DynamicBatcher:
    """Merges concurrent requests into model calls of at most ``max_atoms`` atoms.

    Args:
        model_call: runs the model (called from the worker thread only).
        max_atoms: most atoms in one merged model call.
        wait_s: how long to wait for more requests after the first one arrives.
        enabled: False runs every request on its own (no merging).
        max_queued_atoms: most atoms waiting or running at once; a request that would go
            over is refused (one request alone is always admitted). 0: no bound.
    """

    def __init__(
        self,
        model_call: ModelCall,
        *,
        max_atoms: int,
        wait_s: float,
        enabled: bool = True,
        max_queued_atoms: int = 0,
    ) -> None:
        self._model_call = model_call
        self._max_atoms = max_atoms
        self._max_queued_atoms = max_queued_atoms
        self._queued_atoms = 0
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
        self,
        batch: StructureBatch,
        properties: Sequence[Property],
        is_active: IsActive = _always_active,
    ) -> list[StructureResult]:
        """Runs ``batch`` (possibly merged with others) and returns its checked results.

        Args:
            batch: validated structures.
            properties: what to compute.
            is_active: False once the caller no longer wants the answer; the request is
                then dropped before the model runs.

        Raises:
            BatcherClosedError: the batcher is shut down.
            ServerBusyError: more than ``max_queued_atoms`` atoms would be queued.
            CallNotActiveError: the call stopped being active before the model ran.
            AdapterContractError: the adapter returned the wrong number of results for
                this request run alone.
            Exception: whatever the model call raised when this request ran alone.
        """
        if self._closed:
            raise BatcherClosedError("the potential server is shutting down")
        with self._stats_lock:
            queued, limit = self._queued_atoms, self._max_queued_atoms
            if limit and queued and queued + batch.n_atoms > limit:
                self.stats.shed += 1
                raise ServerBusyError(
                    f"server busy: {queued} atoms already queued, limit {limit} "
                    "(UMLIP_MAX_QUEUED_ATOMS); retry later or on another replica"
                )
            self._queued_atoms += batch.n_atoms
        try:
            future: Future[list[StructureResult]] = Future()
            self._queue.put(_Pending(batch, tuple(properties), future, is_active))
            return future.result()
        finally:
            with self._stats_lock:
                self._queued_atoms -= batch.n_atoms

    def _call(self, batch: StructureBatch, properties: Sequence[Property]) -> list[StructureResult]:
        """The one place a model runs: its results are checked before anyone sees them."""
        return check_results(self._model_call(batch, properties), batch, properties)

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
        group = [pending for pending in group if self._still_wanted(pending)]
        if not group:
            return
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
            results = self._call(merged, properties)
        except Exception as error:
            logger.warning(
                "merged model call failed (%s); re-running its %d requests alone",
                error,
                len(group),
            )
            for pending in group:
                if self._still_wanted(pending):
                    self._run_alone(pending)
            return
        start = 0
        for pending in group:
            stop = start + pending.batch.n_structures
            own = check_results(results[start:stop], pending.batch, pending.properties)
            pending.future.set_result(own)
            start = stop

    def _run_alone(self, pending: _Pending) -> None:
        try:
            pending.future.set_result(self._call(pending.batch, pending.properties))
        except Exception as error:  # handed to the waiting handler thread
            pending.future.set_exception(error)

    def _still_wanted(self, pending: _Pending) -> bool:
        """False (and the request failed) if its caller went away before the model ran."""
        try:
            active = pending.is_active()
        except Exception:  # a broken callback must not stop the worker
            active = True
        if active:
            return True
        with self._stats_lock:
            self.stats.dropped += 1
        pending.future.set_exception(
            CallNotActiveError("the call was cancelled or its deadline passed before the model ran")
        )
        return False
