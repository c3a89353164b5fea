"""Fine-tuning CHGNet with its own trainer: label conversion, a real run, the served result.

One real fine-tune (3 epochs on 9 mlearn DFT frames, 3 validation frames) runs once per
session; its checkpoint is then served by a real service process and passes the
conformance kit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read
from chgnet.data.dataset import collate_graphs
from chgnet.model import CHGNet
from chgnet.trainer.trainer import CombinedLoss
from mptrj_reference import DATA_DIR
from test_conformance import chgnet_target, conformance_structures
from torch.utils.data import DataLoader

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_chgnet import CHGNetPotential
from umlip_chgnet.finetune import (
    CHECKPOINT_FILE,
    freeze,
    load_base_model,
    structure_data,
    to_chgnet_sample,
)
from umlip_serve import ALL_PROPERTIES, Settings, StructureOutput, atoms_to_batch, file_sha256
from umlip_serve.conformance import ConformanceSuite, ConformanceTarget, remote_calculate
from umlip_serve.finetune import (
    GPA_PER_EV_PER_A3,
    EpochMetrics,
    FineTuneError,
    Label,
    frame_label,
    labelled_frame,
    read_training_file,
    write_training_file,
)
from umlip_wire.process import ServiceProcess

MLEARN = DATA_DIR / "mlearn-elastic-dft.xyz"
EPOCHS = 3
#: A known, asymmetric canonical stress (eV/Å^3, tensile positive): distinct components.
STRESS = np.array([[0.011, -0.002, 0.004], [-0.002, -0.007, 0.0015], [0.004, 0.0015, 0.003]])


@pytest.fixture(scope="module")
def base_model() -> CHGNet:
    """Pretrained CHGNet 0.3.0, as the fine-tuning starts from it."""
    model, name, _ = load_base_model("")
    assert name == "0.3.0"
    return model.eval()


def _labelled(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    forces = rng.normal(scale=0.3, size=(len(atoms), 3))
    return labelled_frame(atoms, Label(-5.4 * len(atoms) + 0.37, forces, STRESS), "dft")


def _loader_targets(frames: list[Atoms], model: CHGNet) -> tuple[list, dict, int]:
    data, flipped = structure_data(frames, model.graph_converter, "test")
    loader = DataLoader(data, batch_size=len(frames), shuffle=False, collate_fn=collate_graphs)
    graphs, targets = next(iter(loader))
    return graphs, targets, flipped


def test_conversion_to_structuredata_units() -> None:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    sample = to_chgnet_sample(atoms, frame_label(_labelled(atoms, 0)))
    assert sample.energy_per_atom == pytest.approx(-5.4 + 0.37 / 8, rel=1e-15)
    np.testing.assert_allclose(sample.stress_kbar, -STRESS * 1602.1766208, rtol=1e-15)
    assert sample.stress_kbar[0, 0] < 0 < sample.stress_kbar[1, 1]  # tensile xx -> negative
    np.testing.assert_array_equal(sample.forces, frame_label(_labelled(atoms, 0)).forces)
    assert not sample.flipped


def test_label_reaches_the_trainer_in_gpa_tensile_positive(
    tmp_path: Path, base_model: CHGNet
) -> None:
    right = bulk("Si", "diamond", a=5.43, cubic=True)
    right.positions += np.random.default_rng(1).normal(scale=0.03, size=right.positions.shape)
    left = right.copy()
    left.set_cell(right.cell.array[[1, 0, 2]])  # same lattice, left-handed vectors
    path = write_training_file(tmp_path / "t.xyz", [_labelled(right, 2), _labelled(left, 2)])
    frames = read_training_file(path).frames
    graphs, targets, flipped = _loader_targets(frames, base_model)
    assert flipped == 1
    for i, graph in enumerate(graphs):
        assert torch.det(graph.lattice.double()) > 0
        np.testing.assert_allclose(
            graph.atom_frac_coord.detach().numpy() @ graph.lattice.detach().numpy(),
            frames[i].positions,
            atol=1e-4,
        )
        label = frame_label(frames[i])
        assert targets["e"][i].dtype == torch.float32
        assert float(targets["e"][i]) == pytest.approx(label.energy / 8, rel=1e-7)
        np.testing.assert_allclose(targets["f"][i].numpy(), label.forces, rtol=1e-6, atol=1e-7)
        gpa = targets["s"][i].numpy()  # what CombinedLoss compares with CHGNet's stress
        np.testing.assert_allclose(gpa, STRESS * GPA_PER_EV_PER_A3, rtol=1e-6, atol=1e-7)


def test_served_model_labels_give_zero_trainer_error(
    tmp_path: Path, base_model: CHGNet, potential: CHGNetPotential
) -> None:
    """Canonical labels from the served (sign-corrected) model match the trainer's
    own prediction; the GaAs cell is left-handed."""
    structures = conformance_structures()
    assert np.linalg.det(structures[1].cell.array) < 0
    results = potential.calculate(atoms_to_batch(structures), ALL_PROPERTIES)
    frames = []
    for atoms, result in zip(structures, results, strict=True):
        assert isinstance(result, StructureOutput) and result.stress is not None
        xx, yy, zz, yz, xz, xy = result.stress
        stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        frames.append(labelled_frame(atoms, Label(result.energy, result.forces, stress), "dft"))
    path = write_training_file(tmp_path / "served.xyz", frames)
    graphs, targets, flipped = _loader_targets(read_training_file(path).frames, base_model)
    assert flipped == 1
    prediction = base_model(graphs, task="efs")
    errors = CombinedLoss(target_str="efs")(targets, prediction)
    assert float(errors["e_MAE"]) < 1e-5  # eV/atom
    assert float(errors["f_MAE"]) < 1e-4  # eV/Å
    assert float(errors["s_MAE"]) < 1e-3  # GPa
    flipped_sign = {**targets, "s": [-s for s in targets["s"]]}
    assert float(CombinedLoss(target_str="efs")(flipped_sign, prediction)["s_MAE"]) > 0.1


def test_freeze_by_prefix(base_model: CHGNet) -> None:
    model = CHGNet.from_dict(base_model.as_dict())
    frozen = freeze(model, ["atom_embedding", "bond_conv_layers.0"])
    assert frozen and all(n.startswith(("atom_embedding", "bond_conv_layers.0")) for n in frozen)
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert not parameter.requires_grad
        elif not name.startswith("composition_model"):  # chgnet keeps that one fixed
            assert parameter.requires_grad
    with pytest.raises(FineTuneError, match="matches no CHGNet parameter"):
        freeze(model, ["no_such_layer"])


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    path = write_training_file(tmp_path / "t.xyz", [_labelled(bulk("Si"), 0)] * 2)
    args = ["--train", str(path), "--out", str(tmp_path / "o"), "--base-checkpoint", "9.9.9"]
    run = subprocess.run(
        [sys.executable, "-m", "umlip_chgnet.finetune", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("umlip finetune: unknown CHGNet")
    assert "Traceback" not in run.stderr


@dataclass(frozen=True)
class FineTuned:
    """The session's real fine-tuning run."""

    out: Path
    record: dict
    train_file: Path


def _mlearn(split: str, count: int) -> list[Atoms]:
    frames = [
        f
        for f in read(MLEARN, index=":")
        if f.info["mlearn_split"] == split and f.info["mlearn_element"] in ("Ge", "Mo", "Si")
    ]
    picked = frames[:: len(frames) // count][:count]
    return [labelled_frame(f, frame_label(f), "dft") for f in picked]


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> FineTuned:
    """Fine-tunes CHGNet 0.3.0 for 3 epochs through ``python -m umlip_chgnet.finetune``."""
    root = tmp_path_factory.mktemp("chgnet-ft")
    train = write_training_file(root / "train.xyz", _mlearn("train", 9))
    valid = write_training_file(root / "valid.xyz", _mlearn("test", 3))
    out = root / "out"
    command = [sys.executable, "-m", "umlip_chgnet.finetune", "--train", str(train)]
    command += ["--valid", str(valid), "--out", str(out), "--epochs", str(EPOCHS)]
    command += ["--batch-size", "4", "--freeze", "atom_embedding", "--seed", "3"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record = json.loads((out / "provenance.json").read_text())
    return FineTuned(out, record, train)


def test_finetune_record(finetuned: FineTuned) -> None:
    record = finetuned.record
    checkpoint = finetuned.out / CHECKPOINT_FILE
    assert record["checkpoint_file"] == CHECKPOINT_FILE
    assert record["checkpoint_sha256"] == file_sha256(checkpoint)
    assert record["model_name"] == f"chgnet-ft-{record['checkpoint_sha256'][:8]}"
    assert record["base_checkpoint"] == "0.3.0"
    assert record["label_source"] == "dft"
    assert record["training_data"]["sha256"] == file_sha256(finetuned.train_file)
    assert (record["n_train_frames"], record["n_valid_frames"]) == (9, 3)
    assert record["hyperparameters"]["freeze"] == ["atom_embedding"]
    assert record["extra"]["elements"] == ["Ge", "Mo", "Si"]
    assert record["extra"]["trainer_args"]["targets"] == "efs"
    epochs = record["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    for epoch in epochs:
        assert set(epoch) == set(EpochMetrics.__dataclass_fields__)
        assert all(isinstance(v, int | float) and np.isfinite(v) for v in epoch.values())
        assert 0 < epoch["train_energy_mae"] < 1 and 0 < epoch["train_stress_mae"] < 50
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]


def test_freeze_kept_weights_and_training_moved_others(
    finetuned: FineTuned, base_model: CHGNet
) -> None:
    tuned = CHGNet.from_file(str(finetuned.out / CHECKPOINT_FILE)).state_dict()
    base = base_model.state_dict()
    key = "atom_embedding.embedding.weight"
    assert torch.equal(tuned[key], base[key])
    moved = [k for k in base if k.startswith("mlp.") and not torch.equal(tuned[k], base[k])]
    assert moved


@pytest.fixture(scope="module")
def finetuned_service(finetuned: FineTuned) -> Iterator[ServiceProcess]:
    """The fine-tuned checkpoint served through ``UMLIP_CHECKPOINT=<out folder>``."""
    env = {"UMLIP_CHECKPOINT": str(finetuned.out)}
    with ServiceProcess(
        python=sys.executable, module="umlip_chgnet", env=env, start_timeout_s=300
    ) as service:
        yield service


def test_served_under_its_own_name(
    finetuned: FineTuned, finetuned_service: ServiceProcess, base_model: CHGNet
) -> None:
    with grpc.insecure_channel(finetuned_service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_name == finetuned.record["model_name"]
    assert info.checkpoint_sha256 == finetuned.record["checkpoint_sha256"]
    assert info.provenance["label_source"] == "dft"
    assert info.provenance["base_checkpoint"] == "0.3.0"
    assert info.provenance["epochs"] == str(EPOCHS)
    frame = read(finetuned.train_file, index=0)
    (served,) = remote_calculate(finetuned_service.target, timeout_s=300)([frame])
    assert isinstance(served, StructureOutput)
    structure = to_chgnet_sample(frame, frame_label(frame)).structure
    base = base_model.predict_structure(structure, task="e")
    assert abs(served.energy / len(frame) - float(base["e"])) > 1e-4  # weights changed


class TestFineTunedConformance(ConformanceSuite):
    """The fine-tuned CHGNet passes every conformance check through its server."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, finetuned: FineTuned, finetuned_service: ServiceProcess
    ) -> Iterator[ConformanceTarget]:
        potential = CHGNetPotential(Settings(checkpoint=str(finetuned.out / CHECKPOINT_FILE)))
        potential.load()
        yield chgnet_target(remote_calculate(finetuned_service.target, timeout_s=600), potential)
