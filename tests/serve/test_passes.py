"""Forward passes of bounded size (umlip_serve.passes): the edge budget chosen for the
device, and passes that run out of memory split instead of failing the request."""

from __future__ import annotations

import logging

import pytest

from umlip_serve import Settings
from umlip_serve.passes import (
    GPU_MEMORY_FRACTION,
    MAX_GPU_EDGES,
    EdgeBudget,
    edge_budget,
)
from umlip_wire.errors import CalculatorSetupError, is_out_of_memory


class OutOfMemoryError(RuntimeError):
    """Named as torch.cuda.OutOfMemoryError is (torch is not in this environment)."""


GIB = 1024**3


def test_the_budget_follows_the_device() -> None:
    cpu = edge_budget(0, cpu_edges=10_000, bytes_per_edge=0.15e6, device_memory_bytes=None)
    assert cpu == 10_000
    h200 = edge_budget(0, cpu_edges=10_000, bytes_per_edge=0.15e6, device_memory_bytes=141 * GIB)
    assert h200 == int(GPU_MEMORY_FRACTION * 141 * GIB / 0.15e6)  # about 404,000 edges
    small = edge_budget(0, cpu_edges=10_000, bytes_per_edge=0.15e6, device_memory_bytes=2 * GIB)
    assert small == 10_000  # never below the CPU budget
    huge = edge_budget(0, cpu_edges=10_000, bytes_per_edge=1e3, device_memory_bytes=141 * GIB)
    assert huge == MAX_GPU_EDGES
    chosen = edge_budget(123, cpu_edges=10_000, bytes_per_edge=0.15e6, device_memory_bytes=None)
    assert chosen == 123


def test_the_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).max_edges_per_pass == 0
    assert Settings.from_env({"UMLIP_MAX_EDGES_PER_PASS": "50000"}).max_edges_per_pass == 50_000
    with pytest.raises(CalculatorSetupError, match="UMLIP_MAX_EDGES_PER_PASS must be >= 0"):
        Settings.from_env({"UMLIP_MAX_EDGES_PER_PASS": "-1"})


def test_passes_hold_at_most_the_budget_and_every_item_once() -> None:
    sizes = [30, 50, 20, 120, 10, 10]
    passes: list[list[int]] = []
    EdgeBudget(100, "m").run(sizes, passes.append)
    assert passes == [[0, 1, 2], [3], [4, 5]]  # the 120-edge item runs alone


def test_a_pass_out_of_memory_halves_the_budget_and_the_rest_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sizes = [10] * 10
    ran: list[list[int]] = []

    def device_of_35_edges(chunk: list[int]) -> None:
        if sum(sizes[i] for i in chunk) > 35:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        ran.append(chunk)

    budget = EdgeBudget(1_000, "chgnet")
    with caplog.at_level(logging.WARNING, logger="umlip_serve.passes"):
        budget.run(sizes, device_of_35_edges)
    assert sorted(i for chunk in ran for i in chunk) == list(range(10))  # each once
    assert budget.edges == 25  # 100 -> 50 -> 25 edges: the first that fits
    assert all(sum(sizes[i] for i in chunk) <= 25 for chunk in ran)
    assert "chgnet: out of memory in a pass of 10 structures (100 graph edges)" in caplog.text
    assert "UMLIP_MAX_EDGES_PER_PASS" in caplog.text
    later: list[list[int]] = []
    budget.run(sizes[:4], later.append)  # the next call starts smaller
    assert later == [[0, 1], [2, 3]]


def test_one_structure_too_large_for_memory_fails_and_other_errors_pass_through() -> None:
    def too_large(chunk: list[int]) -> None:
        raise OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemoryError):
        EdgeBudget(1_000, "m").run([500], too_large)

    def broken(chunk: list[int]) -> None:
        raise ValueError("a bug, not memory")

    budget = EdgeBudget(1_000, "m")
    with pytest.raises(ValueError, match="a bug"):
        budget.run([10, 10], broken)
    assert budget.edges == 1_000


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OutOfMemoryError("CUDA out of memory"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: 8 GB"), True),
        (MemoryError(), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_what_counts_as_running_out_of_memory(error: BaseException, expected: bool) -> None:
    assert is_out_of_memory(error) is expected


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        EdgeBudget(0, "m")


def test_an_adapter_budget_comes_from_its_settings_and_class() -> None:
    class GraphModel:
        name = "graph"
        cpu_edges_per_pass = 2_000
        bytes_per_edge = 0.25e6

        def __init__(self, settings: Settings) -> None:
            self.settings = settings

    default = EdgeBudget.for_potential(GraphModel(Settings()), None)
    assert default.edges == 2_000
    on_gpu = EdgeBudget.for_potential(GraphModel(Settings()), 80 * GIB)
    assert on_gpu.edges == int(GPU_MEMORY_FRACTION * 80 * GIB / 0.25e6)
    chosen = EdgeBudget.for_potential(GraphModel(Settings(max_edges_per_pass=777)), 80 * GIB)
    assert chosen.edges == 777


def test_an_unbounded_budget_runs_a_call_in_one_pass_until_memory_runs_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sizes = [40, 40, 40, 40]
    passes: list[list[int]] = []
    unbounded = EdgeBudget(None, "mattersim", unit="atoms")
    unbounded.run(sizes, passes.append)
    assert passes == [[0, 1, 2, 3]] and unbounded.edges is None

    def device_of_100_atoms(chunk: list[int]) -> None:
        if sum(sizes[i] for i in chunk) > 100:
            raise OutOfMemoryError("CUDA out of memory")
        passes.append(chunk)

    passes.clear()
    with caplog.at_level(logging.WARNING, logger="umlip_serve.passes"):
        unbounded.run(sizes, device_of_100_atoms)
    assert passes == [[0, 1], [2, 3]] and unbounded.edges == 80
    assert "mattersim: out of memory in a pass of 4 structures (160 atoms)" in caplog.text
    assert "UMLIP_MAX_EDGES_PER_PASS" not in caplog.text  # a setting of edges, not atoms
