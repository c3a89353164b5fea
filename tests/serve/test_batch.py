"""Budgeted chunking used by adapters to cap one forward pass."""

from __future__ import annotations

from umlip_serve import chunk_by_budget


def test_chunks_stay_within_budget_and_keep_order() -> None:
    assert chunk_by_budget([3, 4, 2, 5, 1], 7) == [[0, 1], [2, 3], [4]]


def test_an_item_over_budget_runs_alone() -> None:
    assert chunk_by_budget([2, 12, 3], 10) == [[0], [1], [2]]
    assert chunk_by_budget([], 10) == []
