"""The streaming workflow: all stages of all materials share requests, outcomes come out
as materials complete, and nothing depends on what shared a request.

In-process EMT (deterministic), so the outcomes of a material must be identical whether
it ran alone, with others, with one or two requests in flight.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from emt_evaluator import ConcurrentEMT

from umlip_orchestrator.datasets import Material
from umlip_orchestrator.examples import emt_crystals
from umlip_orchestrator.workflow import (
    WorkflowSettings,
    run_elastic_workflow,
    stream_elastic_workflow,
)


def materials() -> list[Material]:
    crystals = [
        Material(material_id=a.info["material_id"], formula=a.get_chemical_formula(), atoms=a)
        for a in emt_crystals()[:5]
    ]
    xenon = bulk("Xe", "fcc", a=6.2)
    return [*crystals, Material(material_id="xe", formula="Xe", atoms=xenon)]


@pytest.mark.parametrize("ion_mode", ["clamped", "relaxed"])
def test_outcomes_do_not_depend_on_batching(ion_mode: str) -> None:
    chosen = materials()
    together = WorkflowSettings(ion_mode=ion_mode, max_active=16, requests_in_flight=2)
    evaluator = ConcurrentEMT()
    outcomes = run_elastic_workflow(chosen, evaluator, "emt", together)
    alone = WorkflowSettings(ion_mode=ion_mode, max_active=16, requests_in_flight=1)
    for material, outcome in zip(chosen, outcomes, strict=True):
        (reference,) = run_elastic_workflow([material], ConcurrentEMT(), "emt", alone)
        row, expected = outcome.result, reference.result
        assert row.material_id == material.material_id
        assert row.status == expected.status and row.error == expected.error
        if material.material_id == "xe":
            assert row.status == "failed" and "Xe" in str(row.error)
            continue
        assert row.status == "ok", row.error
        assert row.relax_steps == expected.relax_steps
        np.testing.assert_array_equal(row.elastic_tensor_gpa, expected.elastic_tensor_gpa)
        assert [d.stress_gpa for d in outcome.deformations] == [
            d.stress_gpa for d in reference.deformations
        ]
    # The deformed cells of different materials shared requests.
    materials_per_request = [set(request) for request in evaluator.requests]
    assert max(len(m) for m in materials_per_request) >= 2


def test_outcomes_stream_before_all_materials_are_read() -> None:
    read: list[str] = []

    def source():
        for material in materials()[:5]:
            read.append(material.material_id)
            yield material

    settings = WorkflowSettings(ion_mode="clamped", max_active=2, requests_in_flight=1)
    stream = stream_elastic_workflow(source(), ConcurrentEMT(), "emt", settings)
    index, first = next(stream)
    assert first.result.status == "ok"
    assert len(read) < 5  # the first outcome came before the last material was read
    rest = [i for i, _ in stream]
    assert sorted([index, *rest]) == list(range(5))
