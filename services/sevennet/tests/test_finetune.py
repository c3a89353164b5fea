"""Fine-tuning SevenNet with sevenn's own trainer: label conversion, a real run, the result served.

One real fine-tune (3 epochs from SevenNet-0 on 8 mlearn DFT frames, 3 validation frames,
two parameter groups frozen) runs in this process once per module; its checkpoint is then
served by a real service process, reports its provenance and passes the conformance kit.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import grpc
import numpy as np
import pytest
import sevenn._keys as keys
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read
from conftest import DATA_DIR
from sevenn import util
from sevenn.error_recorder import ErrorRecorder
from sevenn.train.graph_dataset import SevenNetGraphDataset
from sevenn.train.loss import StressLoss
from test_conformance import sevennet_target
from torch_geometric.data import Batch

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
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
    run_main,
    write_training_file,
)
from umlip_sevennet import SevenNetPotential
from umlip_sevennet.finetune import (
    DATA_FORMAT_ARGS,
    ERROR_RECORD,
    PRESET,
    main,
    to_sevenn_frame,
)
from umlip_wire.process import ServiceProcess

MLEARN = DATA_DIR / "mlearn-elastic-dft.xyz"
EPOCHS = 3
FROZEN = ("onehot_to_feature_x", "0_")
#: A known, asymmetric canonical stress (eV/Å^3, tensile positive): distinct components.
STRESS = np.array([[0.011, -0.002, 0.004], [-0.002, -0.007, 0.0015], [0.004, 0.0015, 0.003]])
KBAR_PER_EV_PER_A3 = 1602.1766208


def _trainer_graphs(frames: list[Atoms], root: Path) -> list:
    """The graphs sevenn's trainer gets: canonical file -> conversion -> sevenn's dataset."""
    canonical = read_training_file(write_training_file(root / "canonical.xyz", frames)).frames
    path = write_training_file(root / "sevenn.extxyz", [to_sevenn_frame(f) for f in canonical])
    dataset = SevenNetGraphDataset(
        cutoff=5.0, root=str(root), files=[str(path)], processed_name="check", **DATA_FORMAT_ARGS
    )
    return [dataset[i] for i in range(len(dataset))]


def test_known_label_reaches_the_trainer_negated_in_sevenn_order(tmp_path: Path) -> None:
    atoms = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    forces = np.random.default_rng(3).normal(scale=0.3, size=(len(atoms), 3))
    frame = labelled_frame(atoms, Label(-21.7345, forces, STRESS), "dft")
    frame.calc.results["free_energy"] = -99.0  # sevenn's calculator path would take this
    (graph,) = _trainer_graphs([frame], tmp_path)

    xx, yy, zz = STRESS[0, 0], STRESS[1, 1], STRESS[2, 2]
    xy, yz, zx = STRESS[0, 1], STRESS[1, 2], STRESS[2, 0]
    sevenn_stress = -np.array([[xx, yy, zz, xy, yz, zx]])  # eV/Å^3, compressive positive
    np.testing.assert_allclose(graph[keys.STRESS].numpy(), sevenn_stress, rtol=1e-6)
    assert graph[keys.ENERGY].item() == pytest.approx(-21.7345, rel=1e-7)
    np.testing.assert_allclose(graph[keys.FORCE].numpy(), forces, rtol=1e-6, atol=1e-7)
    assert graph[keys.ENERGY].dtype == torch.float32  # sevenn trains in float32

    # The loss sees kbar, the Stress_GPa metric GPa, both on the trainer's stress.
    batch = Batch.from_data_list([graph])
    batch[keys.PRED_STRESS] = torch.zeros_like(batch[keys.STRESS])
    _, ref, _ = StressLoss()._preprocess(batch)
    np.testing.assert_allclose(ref.numpy(), sevenn_stress[0] * KBAR_PER_EV_PER_A3, rtol=1e-6)
    recorder = ErrorRecorder.from_config({keys.ERROR_RECORD: ERROR_RECORD[2:3]})
    recorder.update(batch)
    (stress_mae,) = recorder.get_metric_dict().values()
    assert stress_mae == pytest.approx(np.abs(sevenn_stress).mean() * GPA_PER_EV_PER_A3, rel=1e-6)


def test_trainer_labels_share_the_sign_and_order_of_sevenn_predictions(tmp_path: Path) -> None:
    frames = read(MLEARN, index=":")
    (dft,) = [f for f in frames if f.info["description"] == "Si 2x2x2 cell, mode 3, strain -0.1"]
    (graph,) = _trainer_graphs([labelled_frame(dft, frame_label(dft), "dft")], tmp_path)
    model = util.load_checkpoint(util.pretrained_name_to_path("7net-0")).build_model()
    model.set_is_batch_data(True)
    predicted = model(Batch.from_data_list([graph]))[keys.PRED_STRESS].detach().numpy()[0]
    label = graph[keys.STRESS].numpy()[0]
    assert np.abs(label).max() * GPA_PER_EV_PER_A3 > 15  # a large shear: -20.6 GPa in ASE xy
    error = np.abs(predicted - label).max()
    wrong = {"opposite sign": -label, "ASE order": label[[0, 1, 2, 4, 5, 3]]}
    for name, other in wrong.items():
        assert error < 0.5 * np.abs(predicted - other).max(), name


def _mlearn_frames() -> tuple[list[Atoms], list[Atoms]]:
    """8 training frames (Li2 under shear, relaxed Mo2, a strained Mo54) and 3 validation."""
    frames = [f for f in read(MLEARN, index=":") if f.info["mlearn_split"] == "train"]
    small = [f for f in frames if len(f) == 2]
    mo54 = [f for f in frames if f.info["mlearn_element"] == "Mo" and len(f) == 54]
    li = [f for f in small if f.info["mlearn_element"] == "Li"]
    mo2 = [f for f in small if f.info["mlearn_element"] == "Mo"]
    return li[8:20:2] + mo2 + mo54[:1], li[9:13:2] + mo54[3:4]


def _canonical(path: Path, frames: list[Atoms]) -> Path:
    return write_training_file(
        path,
        [
            labelled_frame(f, frame_label(f), "dft", {"material_id": f.info["mlearn_element"]})
            for f in frames
        ],
    )


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One real fine-tune, in this process: (output folder, provenance record)."""
    root = tmp_path_factory.mktemp("sevennet-ft")
    train, valid = _mlearn_frames()
    out = root / "out"
    argv = [
        "--train", str(_canonical(root / "train.xyz", train)),
        "--valid", str(_canonical(root / "valid.xyz", valid)),
        "--out", str(out),
        "--epochs", str(EPOCHS),
        "--learning-rate", "5e-4",
        "--batch-size", "2",
        "--seed", "0",
    ]  # fmt: skip
    for prefix in FROZEN:
        argv += ["--freeze", prefix]
    main(argv)
    return out, json.loads((out / "provenance.json").read_text(encoding="utf-8"))


def test_finetune_trains_with_stress_and_records_provenance(finetuned: tuple[Path, dict]) -> None:
    out, record = finetuned
    checkpoint = out / "checkpoint.pth"
    assert record["model_name"] == f"sevennet-ft-{file_sha256(checkpoint)[:8]}"
    assert set(record) == {
        "kind", "model", "model_name", "checkpoint_file", "checkpoint_sha256",
        "base_checkpoint", "base_checkpoint_sha256", "label_source", "training_data",
        "validation_data", "n_train_frames", "n_valid_frames", "trained_materials",
        "hyperparameters", "trainer", "extra", "epochs", "wall_time_s", "package_versions",
        "created",
    }  # fmt: skip
    assert record["label_source"] == "dft"
    assert (record["n_train_frames"], record["n_valid_frames"]) == (8, 3)
    assert record["trained_materials"] == ["Li", "Mo"]
    assert record["base_checkpoint"] == "7net-0 (SevenNet_0__11Jul2024)"
    assert record["hyperparameters"]["freeze"] == list(FROZEN)
    assert record["extra"]["preset"] == f"sevenn/presets/{PRESET}"
    assert record["package_versions"]["sevenn"] == "0.13.0"
    epochs = [EpochMetrics(**e) for e in record["epochs"]]
    assert [e.epoch for e in epochs] == list(range(1, EPOCHS + 1))
    for epoch in epochs:
        for field in fields(EpochMetrics):
            value = getattr(epoch, field.name)
            assert value is not None and math.isfinite(value), (epoch.epoch, field.name)
        assert epoch.train_stress_mae > 0.01  # GPa: stress is a target, not zeros
    assert epochs[-1].train_loss < epochs[0].train_loss
    lc = (out / "sevenn" / "lc.csv").read_text(encoding="utf-8")
    assert "trainset_Stress_MAE" in lc and (out / "sevenn" / "log.sevenn").is_file()


def test_statistics_and_frozen_parameters_kept_others_trained(
    finetuned: tuple[Path, dict],
) -> None:
    out, record = finetuned
    base = util.load_checkpoint(util.pretrained_name_to_path("7net-0")).model_state_dict
    tuned_checkpoint = util.load_checkpoint(str(out / "checkpoint.pth"))
    tuned = tuned_checkpoint.model_state_dict
    assert tuned_checkpoint.epoch == record["extra"]["checkpoint_epoch"]
    kept = [k for k in base if k.startswith((*FROZEN, "rescale_atomic_energy"))]
    kept += [k for k in base if k.endswith("convolution.denominator")]
    assert len(kept) > 5
    for name in kept:
        assert torch.equal(base[name], tuned[name]), name
    assert not torch.equal(base["reduce_hidden_to_energy.linear.weight"],
                           tuned["reduce_hidden_to_energy.linear.weight"])  # fmt: skip
    assert record["extra"]["parameters"]["frozen"] > 183  # shift, scale, denominators + FROZEN


@pytest.fixture(scope="module")
def finetuned_potential(finetuned: tuple[Path, dict]) -> SevenNetPotential:
    """The adapter loaded in this process from the fine-tuned checkpoint file."""
    potential = SevenNetPotential(Settings(checkpoint=str(finetuned[0] / "checkpoint.pth")))
    potential.load()
    return potential


def test_recorded_validation_mae_matches_the_served_checkpoint(
    finetuned: tuple[Path, dict], finetuned_potential: SevenNetPotential
) -> None:
    """The GPa/eV-per-atom MAEs read from sevenn's log equal a recomputation in ASE units."""
    out, record = finetuned
    valid = read_training_file(out.parent / "valid.xyz").frames
    results = finetuned_potential.calculate(atoms_to_batch(valid), ALL_PROPERTIES)
    energy, force, stress = [], [], []
    for frame, result in zip(valid, results, strict=True):
        assert isinstance(result, StructureOutput)
        energy.append(abs(result.energy - frame.get_potential_energy()) / len(frame))
        force.extend(np.abs(result.forces - frame.get_forces()).ravel())
        stress.extend(np.abs(result.stress - frame.get_stress()) * GPA_PER_EV_PER_A3)
    (best,) = [e for e in record["epochs"] if e["epoch"] == record["extra"]["checkpoint_epoch"]]
    assert np.mean(energy) == pytest.approx(best["valid_energy_mae"], rel=1e-3, abs=2e-6)
    assert np.mean(force) == pytest.approx(best["valid_force_mae"], rel=1e-3, abs=2e-6)
    assert np.mean(stress) == pytest.approx(best["valid_stress_mae"], rel=1e-3, abs=2e-5)


def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    polonium = Atoms("Po", cell=np.eye(3) * 3.4, pbc=True)  # not among 7net-0's 89 elements
    frames = [labelled_frame(polonium, Label(-1.0, np.zeros((1, 3)), STRESS), "dft")] * 2
    path = write_training_file(tmp_path / "po.xyz", frames)
    assert run_main(main, ["--train", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip()
    assert "does not know elements ['Po']" in message and "\n" not in message
    with pytest.raises(FineTuneError, match="multi-fidelity"):
        main(["--train", str(path), "--out", str(tmp_path / "o"), "--base-checkpoint", "7net-mf-0"])


@pytest.fixture(scope="module")
def finetuned_service(finetuned: tuple[Path, dict]) -> Iterator[ServiceProcess]:
    """A real SevenNet server started on the fine-tuning output folder."""
    env = {"UMLIP_CHECKPOINT": str(finetuned[0])}
    with ServiceProcess(
        python=sys.executable, module="umlip_sevennet", env=env, start_timeout_s=300
    ) as service:
        yield service


def test_served_as_finetuned_model_with_provenance(
    finetuned: tuple[Path, dict], finetuned_service: ServiceProcess
) -> None:
    out, record = finetuned
    with grpc.insecure_channel(finetuned_service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_name == record["model_name"]
    assert info.model_name.startswith("sevennet-ft-")
    assert info.checkpoint_sha256 == file_sha256(out / "checkpoint.pth")
    assert info.provenance["label_source"] == "dft"
    assert info.provenance["base_checkpoint"] == "7net-0 (SevenNet_0__11Jul2024)"
    assert info.provenance["trained_materials"] == "Li,Mo"
    assert info.provenance["epochs"] == str(EPOCHS)


class TestFineTunedSevenNetConformance(ConformanceSuite):
    """The fine-tuned checkpoint passes every conformance check through a real server."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, finetuned_service: ServiceProcess, finetuned_potential: SevenNetPotential
    ) -> Iterator[ConformanceTarget]:
        yield sevennet_target(
            remote_calculate(finetuned_service.target, timeout_s=600), finetuned_potential
        )
