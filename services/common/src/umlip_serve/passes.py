"""Forward passes of bounded size for graph models, sized to the device (no torch here).

A graph model (CHGNet, SevenNet, HIENet) batches many structures into one forward pass,
up to a budget of graph edges: its activations, and those of the backward pass that
gives forces and stress, grow with the edges. On a CPU a modest budget is fastest; a GPU
wants passes as large as its memory allows, or its Python and launch overhead dominate.

:func:`edge_budget` picks the budget: ``UMLIP_MAX_EDGES_PER_PASS`` when set, otherwise
the model's CPU budget on a CPU, and on a GPU the edges that fit in
:data:`GPU_MEMORY_FRACTION` of its memory at the model's measured bytes per edge (never
less than the CPU budget). :class:`EdgeBudget` runs the passes and, should one run out
of memory anyway, halves itself and runs the rest in smaller passes: a wrong estimate
costs speed, never a failed request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from umlip_wire.batch import chunk_by_budget
from umlip_wire.errors import is_out_of_memory

logger = logging.getLogger("umlip_serve.passes")

#: Share of a GPU's memory that one pass's edges may take (the rest: the model, the
#: allocator's cache, the graphs of the next pass).
GPU_MEMORY_FRACTION = 0.4
#: Largest budget chosen from memory (an allocation the size of a whole H200 is no faster).
MAX_GPU_EDGES = 2_000_000


def edge_budget(
    configured: int,
    *,
    cpu_edges: int,
    bytes_per_edge: float,
    device_memory_bytes: int | None,
) -> int:
    """The most graph edges in one forward pass.

    Args:
        configured: ``Settings.max_edges_per_pass`` (``UMLIP_MAX_EDGES_PER_PASS``); a
            positive value is used as it is, 0 picks the default below.
        cpu_edges: The model's budget on a CPU (fastest there, and the least anywhere).
        bytes_per_edge: The model's memory per edge of a pass with forces and stress.
        device_memory_bytes: Total memory of the GPU the model runs on; None on a CPU.
    """
    if configured > 0:
        return configured
    if device_memory_bytes is None:
        return cpu_edges
    fits = int(GPU_MEMORY_FRACTION * device_memory_bytes / bytes_per_edge)
    return max(cpu_edges, min(fits, MAX_GPU_EDGES))


class EdgeBudget:
    """Runs items (graphs) in passes of at most :attr:`edges` edges each (None: all the
    items of a call in one pass); a pass that runs out of memory halves the budget for
    it and every later pass. ``unit`` names what the sizes count, for the log."""

    def __init__(self, edges: int | None, model: str, unit: str = "graph edges") -> None:
        if edges is not None and edges < 1:
            raise ValueError(f"an edge budget must be positive, got {edges}")
        self.edges = edges
        self._model = model
        self._unit = unit
        if edges is None:
            logger.info("%s: one forward pass per call, split if memory runs out", model)
        else:
            logger.info("%s: forward passes of at most %d %s", model, edges, unit)

    @classmethod
    def for_potential(cls, potential: Any, device_memory_bytes: int | None) -> EdgeBudget:
        """The budget of a graph-model adapter on its device: from its settings'
        ``max_edges_per_pass`` and its class's ``cpu_edges_per_pass`` and
        ``bytes_per_edge`` (see :func:`edge_budget`)."""
        edges = edge_budget(
            potential.settings.max_edges_per_pass,
            cpu_edges=potential.cpu_edges_per_pass,
            bytes_per_edge=potential.bytes_per_edge,
            device_memory_bytes=device_memory_bytes,
        )
        return cls(edges, potential.name)

    def run(self, sizes: Sequence[int], run_pass: Callable[[list[int]], None]) -> None:
        """Calls ``run_pass`` with consecutive index groups of ``sizes`` (edges per item)
        that fit the budget, each item exactly once. Running out of memory is what
        :func:`umlip_wire.errors.is_out_of_memory` says it is (as for the server's
        RESOURCE_EXHAUSTED answer).

        Raises:
            BaseException: whatever ``run_pass`` raised that is not running out of
                memory, or running out of memory on a single item (it cannot be split).
        """
        start = 0
        while start < len(sizes):
            budget = self.edges if self.edges is not None else sum(sizes[start:])
            (first, *_) = chunk_by_budget(sizes[start:], budget)
            chunk = [start + i for i in first]
            try:
                run_pass(chunk)
            except Exception as error:
                if not is_out_of_memory(error) or len(chunk) == 1:
                    raise
                edges = sum(sizes[i] for i in chunk)
                self.edges = max(1, min(self.edges or edges, edges) // 2)
                logger.warning(
                    "%s: out of memory in a pass of %d structures (%d %s); passes now "
                    "hold at most %d%s",
                    self._model,
                    len(chunk),
                    edges,
                    self._unit,
                    self.edges,
                    # The setting counts edges; a budget in other units has none.
                    " (set UMLIP_MAX_EDGES_PER_PASS to fix it)"
                    if self._unit == "graph edges"
                    else "",
                )
                continue
            start += len(chunk)
