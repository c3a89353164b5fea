"""Fixtures of the report tests: a small DFT reference and a two-model run over it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_helpers import (
    DE_JONG,
    N_MATERIALS,
    NO_VALUES_INDEX,
    UNSTABLE_INDEX,
    manifest_entry,
    write_run,
)

from umlip_orchestrator.datasets import Material, load_dataset
from umlip_orchestrator.tables import ResultStore


@pytest.fixture(scope="session")
def de_jong_entries() -> list[dict[str, Any]]:
    """The first entries of the de Jong set, as raw JSON."""
    with gzip.open(DE_JONG, "rt", encoding="utf-8") as handle:
        return json.load(handle)[:N_MATERIALS]


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory: pytest.TempPathFactory, de_jong_entries) -> Path:
    """A full-tensor reference file: de Jong entries, one made DFT-unstable, one emptied."""
    entries = [dict(e) for e in de_jong_entries]
    tensor = np.array(entries[UNSTABLE_INDEX]["elastic_tensor_original"])
    tensor[3, 3] = -abs(tensor[3, 3]) - 5.0
    entries[UNSTABLE_INDEX]["elastic_tensor_original"] = tensor.tolist()
    for key in ("elastic_tensor_original", "elastic_tensor", "K_VRH", "G_VRH"):
        entries[NO_VALUES_INDEX].pop(key, None)
    path = tmp_path_factory.mktemp("reference") / "small-dejong.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_materials(small_reference: Path) -> list[Material]:
    materials, problems = load_dataset(small_reference)
    assert not problems
    return materials


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory, small_materials, small_reference) -> Path:
    """A two-model run over the small reference."""
    out = tmp_path_factory.mktemp("run")
    write_run(out, small_materials, {"alpha": 1.0, "beta": 0.9})
    ResultStore(out).write_manifest(manifest_entry(small_reference, ["alpha", "beta"]))
    return out


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory, run_dir: Path, small_reference: Path):
    """The report of ``run_dir`` against the small full-tensor reference."""
    from umlip_orchestrator.report import build_report

    out = tmp_path_factory.mktemp("report")
    analysis, files = build_report(run_dir, out, [small_reference])
    return out, analysis, files
