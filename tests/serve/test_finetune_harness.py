"""The harness side of fine-tuning: the canonical training file, the train/validation
split, and a service started on a fine-tuning output folder (a real EMT process: the
harness verifies and names the checkpoint whatever the model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from umlip_orchestrator.client import PotentialClient
from umlip_serve.finetune import (
    PROVENANCE_FILE,
    FineTuneError,
    FineTuneSettings,
    Label,
    labelled_frame,
    load_training_data,
    read_training_file,
    resolve_finetuned,
    write_training_file,
)
from umlip_wire.digest import file_sha256
from umlip_wire.process import ServiceProcess, ServiceStartError


def _frames(n: int, source: str | None = "dft") -> list:
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True)
        stress = np.array([[0.01, 0.002, 0.003], [0.002, -0.02, 0.004], [0.003, 0.004, 0.03]])
        label = Label(-3.0 - k, np.full((4, 3), 0.1 * k), stress)
        frame = labelled_frame(atoms, label, source or "dft", {"material_id": f"m{k % 3}"})
        if source is None:
            del frame.info["label_source"]
        frames.append(frame)
    return frames


def test_canonical_file_round_trip_keeps_labels_and_source(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "t.xyz", _frames(4))
    data = read_training_file(path)
    assert data.label_source == "dft" and data.sha256 == file_sha256(path)
    assert data.material_ids == ["m0", "m1", "m2"]
    # The stress is read back as ASE's Voigt order with its sign (tensile positive).
    np.testing.assert_allclose(
        data.frames[0].get_stress(), [0.01, -0.02, 0.03, 0.004, 0.003, 0.002]
    )
    np.testing.assert_allclose(data.frames[3].get_forces(), 0.3)


def test_training_files_say_where_labels_come_from(tmp_path: Path) -> None:
    unlabelled = tmp_path / "u.xyz"
    write(unlabelled, _frames(2, source=None), format="extxyz")
    with pytest.raises(FineTuneError, match="carry no label_source"):
        read_training_file(unlabelled)
    assert read_training_file(unlabelled, "model:emt").label_source == "model:emt"
    mixed = tmp_path / "mixed.xyz"
    write_training_file(mixed, _frames(1) + _frames(1, "model:emt"))
    with pytest.raises(FineTuneError, match="mixes label sources"):
        read_training_file(mixed)
    no_stress = bulk("Cu", cubic=True)
    no_stress.info["label_source"] = "dft"
    write(tmp_path / "bad.xyz", [no_stress], format="extxyz")
    with pytest.raises(FineTuneError, match="lacks"):
        read_training_file(tmp_path / "bad.xyz")


def test_validation_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "t.xyz", _frames(10))
    settings = FineTuneSettings(train=path, out=tmp_path / "o", valid_fraction=0.2, seed=3)
    train, valid = load_training_data(settings)
    energies = [f.get_potential_energy() for f in train.frames + valid.frames]
    assert len(valid.frames) == 2 and sorted(energies) == sorted(-3.0 - k for k in range(10))
    again = load_training_data(settings)[1]
    assert [f.get_potential_energy() for f in again.frames] == [
        f.get_potential_energy() for f in valid.frames
    ]


def _finetuned_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "emt-ft"
    folder.mkdir()
    (folder / "checkpoint.bin").write_bytes(b"weights of a fine-tuned model")
    sha = file_sha256(folder / "checkpoint.bin")
    record = {
        "kind": "umlip-finetune", "model": "emt", "model_name": f"emt-ft-{sha[:8]}",
        "checkpoint_file": "checkpoint.bin", "checkpoint_sha256": sha,
        "base_checkpoint": "EMT", "base_checkpoint_sha256": "", "label_source": "model:x",
        "training_data": {"path": "t.xyz", "sha256": "ab" * 32},
        "trained_materials": ["mp-1", "mp-2"], "epochs": [{}, {}],
    }  # fmt: skip
    (folder / PROVENANCE_FILE).write_text(json.dumps(record))
    return folder


def test_a_service_on_a_finetuned_folder_reports_its_name_and_provenance(
    emt_python: Path, tmp_path: Path
) -> None:
    folder = _finetuned_folder(tmp_path)
    assert resolve_finetuned(str(folder / "checkpoint.bin")).path == folder / "checkpoint.bin"
    env = {"UMLIP_CHECKPOINT": str(folder)}
    with ServiceProcess(python=emt_python, module="umlip_emt", env=env) as service:
        info = PotentialClient(service.target).info()
    sha = file_sha256(folder / "checkpoint.bin")
    assert info.model_name == f"emt-ft-{sha[:8]}" and info.is_finetuned
    assert info.label_source == "model:x"
    assert info.provenance["trained_materials"] == "mp-1,mp-2"
    assert info.provenance["epochs"] == "2"


def test_a_replaced_checkpoint_is_refused(emt_python: Path, tmp_path: Path) -> None:
    folder = _finetuned_folder(tmp_path)
    (folder / "checkpoint.bin").write_bytes(b"something else")
    with pytest.raises(FineTuneError, match="does not match the sha256"):
        resolve_finetuned(str(folder))
    env = {"UMLIP_CHECKPOINT": str(folder)}
    with pytest.raises(ServiceStartError, match="does not match the sha256"):
        ServiceProcess(python=emt_python, module="umlip_emt", env=env).start()
    with pytest.raises(FineTuneError, match=r"without provenance\.json"):
        resolve_finetuned(str(tmp_path))
