"""Server settings from the environment: torch threads default to the CPUs available."""

from __future__ import annotations

import os

import pytest

from umlip_serve import CalculatorSetupError
from umlip_serve.settings import Settings
from umlip_wire.cpus import available_cpus


def test_torch_threads_default_to_every_available_cpu() -> None:
    cpus = available_cpus()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    assert Settings.from_env({}).torch_threads == cpus
    assert Settings.from_env({"UMLIP_TORCH_THREADS": "0"}).torch_threads == cpus
    assert Settings.from_env({"UMLIP_TORCH_THREADS": "3"}).torch_threads == 3
    with pytest.raises(CalculatorSetupError, match="UMLIP_TORCH_THREADS"):
        Settings.from_env({"UMLIP_TORCH_THREADS": "-1"})


def test_available_cpus_follows_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus() == 1
    finally:
        os.sched_setaffinity(0, before)
