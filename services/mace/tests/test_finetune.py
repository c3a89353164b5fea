"""Fine-tuning MACE with mace-torch's own ``run_train``: labels, a real run, the result served.

The base model is the session's tiny model (conftest), which knows Li, Si and Ge; the
fine-tuning frames are real DFT strained supercells of those elements from
``mlearn-elastic-dft.xyz``. One fine-tuning run (a subprocess, as a user starts it) is
shared by the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress
from conftest import start_service
from mace import data as mace_data
from mace import tools as mace_tools
from mace.tools import torch_geometric, torch_tools
from mace.tools.scripts_utils import get_dataset_from_xyz
from test_mace_conformance import mace_target

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_mace import MACEPotential
from umlip_mace.finetune import (
    CHECKPOINT_FILE,
    RUN_DIR,
    VALID_HEAD,
    atomic_energies,
    load_model,
    mace_atoms,
    main,
    run_train_argv,
    write_mace_file,
)
from umlip_serve import ALL_PROPERTIES, Settings, StructureOutput, atoms_to_batch, file_sha256
from umlip_serve.conformance import (
    DEFORMATION,
    ConformanceSuite,
    ConformanceTarget,
)
from umlip_serve.finetune import (
    GPA_PER_EV_PER_A3,
    PROVENANCE_FILE,
    EpochMetrics,
    FineTuneSettings,
    Label,
    frame_label,
    labelled_frame,
    read_training_file,
    run_main,
    write_training_file,
)
from umlip_serve.testing import NO_NETWORK, shared_data
from umlip_wire.process import ServiceProcess

MLEARN = shared_data(__file__) / "mlearn-elastic-dft.xyz"
EPOCHS = 3
#: A symmetric stress with six distinct components, eV/Å^3, tensile positive.
STRESS = np.array([[0.0125, -0.0031, 0.0047], [-0.0031, -0.0213, 0.0062], [0.0047, 0.0062, 0.0339]])
#: Every key of a provenance record (umlip_serve.finetune.ProvenanceRecorder.finish).
RECORD_KEYS = {
    "kind", "model", "model_name", "checkpoint_file", "checkpoint_sha256", "base_checkpoint",
    "base_checkpoint_sha256", "label_source", "training_data", "validation_data",
    "n_train_frames", "n_valid_frames", "trained_materials", "hyperparameters", "trainer",
    "extra", "epochs", "wall_time_s", "package_versions", "created",
}  # fmt: skip


def mlearn_frames(split: str, per_element: int) -> list[Atoms]:
    """Canonical copies (label_source dft) of Li, Si and Ge frames of one mlearn split."""
    frames = read(MLEARN, index=":")
    picked = []
    for element in ("Li", "Si", "Ge"):
        chosen = [
            f
            for f in frames
            if f.info["mlearn_element"] == element and f.info["mlearn_split"] == split
        ]
        picked += chosen[:per_element]
    return [
        labelled_frame(
            f, frame_label(f), "dft", {"material_id": f"mlearn-{f.info['mlearn_element']}"}
        )
        for f in picked
    ]


def mace_data_objects(mace_file: Path, work: Path, z: list[int]) -> list[mace_data.AtomicData]:
    """What ``run_train`` makes of ``mace_file``: its key specification from the argv
    :func:`run_train_argv` builds, its ``get_dataset_from_xyz``, ``AtomicData.from_config``."""
    settings = FineTuneSettings(train=mace_file, out=work)
    argv = run_train_argv(settings, Path("base.model"), mace_file, mace_file, work)
    args = mace_tools.build_default_arg_parser().parse_args(argv)
    keyspec = mace_data.KeySpecification()
    mace_data.update_keyspec_from_kwargs(keyspec, vars(args))
    with torch_tools.default_dtype("float64"):
        collections, _ = get_dataset_from_xyz(
            work_dir=str(work),
            train_path=[str(mace_file)],
            valid_path=[str(mace_file)],
            valid_fraction=0.1,
            key_specification=keyspec,
        )
        return [
            mace_data.AtomicData.from_config(
                c, z_table=mace_tools.AtomicNumberTable(z), cutoff=4.5, heads=["Default"]
            )
            for c in collections.train
        ]


def test_labels_reach_mace_atomic_data_with_ase_sign_and_units(tmp_path: Path) -> None:
    atoms = Atoms(
        "Si2",
        scaled_positions=[[0, 0, 0], [0.26, 0.24, 0.27]],
        cell=[[5.4, 0.1, 0.0], [0.2, 5.3, 0.1], [0.0, 0.3, 5.5]],
        pbc=True,
    )
    forces = np.array([[0.11, -0.23, 0.37], [-0.11, 0.23, -0.37]])
    label = Label(energy=-10.8125, forces=forces, stress=STRESS)
    canonical = write_training_file(
        tmp_path / "canonical.xyz", [labelled_frame(atoms, label, "dft")]
    )
    (frame,) = read_training_file(canonical).frames

    converted = mace_atoms(frame)
    assert converted.info["REF_energy"] == pytest.approx(-10.8125, abs=1e-12)
    np.testing.assert_allclose(converted.arrays["REF_forces"], forces, atol=1e-8)
    # Voigt order xx yy zz yz xz xy, ASE's, which mace-torch's voigt_to_matrix expects
    np.testing.assert_allclose(
        converted.info["REF_stress"], [0.0125, -0.0213, 0.0339, 0.0062, 0.0047, -0.0031]
    )

    mace_file = write_mace_file(tmp_path / "mace.xyz", [frame])
    (seen,) = mace_data_objects(mace_file, tmp_path, [14])
    assert seen.energy.item() == pytest.approx(-10.8125, abs=1e-8)  # eV, total
    np.testing.assert_allclose(seen.forces.numpy(), forces, atol=1e-8)  # eV/Å
    assert seen.stress.shape == (1, 3, 3)
    np.testing.assert_allclose(seen.stress[0].numpy(), STRESS, atol=1e-8)  # eV/Å^3, tensile +
    # the labels count in the loss
    assert seen.energy_weight.item() == seen.forces_weight.item() == 1.0
    assert seen.stress_weight.item() == 1.0


def test_trainer_labels_agree_with_its_model_sign(tiny_model: Path, tmp_path: Path) -> None:
    """Labels made by the base model (the adapter, ASE's convention, conformance-tested)
    reach mace-torch's data equal to what the same model predicts in training: a flipped
    sign or permuted Voigt component would not match."""
    atoms = bulk("Si", "diamond", a=5.2)
    atoms.numbers[1] = 32  # Ge
    atoms.set_cell(atoms.cell.array @ DEFORMATION, scale_atoms=True)
    atoms.positions[1] += [0.05, -0.03, 0.02]
    potential = MACEPotential(Settings(checkpoint=str(tiny_model), dtype="float64"))
    potential.load()
    (result,) = potential.calculate(atoms_to_batch([atoms]), ALL_PROPERTIES)
    assert isinstance(result, StructureOutput)
    stress = result.stress
    assert np.abs(stress).min() > 1e-5
    assert np.abs(stress[:, None] - stress[None, :])[np.triu_indices(6, 1)].min() > 1e-6
    label = Label(result.energy, result.forces, voigt_6_to_full_3x3_stress(stress))
    canonical = write_training_file(tmp_path / "c.xyz", [labelled_frame(atoms, label, "dft")])
    mace_file = write_mace_file(tmp_path / "m.xyz", read_training_file(canonical).frames)

    model = load_model(tiny_model).double()
    (seen,) = mace_data_objects(mace_file, tmp_path, [int(z) for z in model.atomic_numbers])
    batch = torch_geometric.Batch.from_data_list([seen])
    out = model(batch.to_dict(), training=False, compute_stress=True)
    np.testing.assert_allclose(out["stress"].detach().numpy(), seen.stress.numpy(), atol=1e-8)
    np.testing.assert_allclose(out["forces"].detach().numpy(), seen.forces.numpy(), atol=1e-7)
    assert out["energy"].item() == pytest.approx(seen.energy.item(), abs=1e-6)


@pytest.fixture(scope="module")
def finetune_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 training frames (4 Li, 4 Si, 4 Ge) and 3 held-out test frames, canonical."""
    assert MLEARN.exists(), f"shared data missing: {MLEARN}"
    folder = tmp_path_factory.mktemp("mlearn")
    return (
        write_training_file(folder / "train.xyz", mlearn_frames("train", 4)),
        write_training_file(folder / "valid.xyz", mlearn_frames("test", 1)),
    )


@pytest.fixture(scope="module")
def finetuned(
    tiny_model: Path, finetune_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The output folder of one real fine-tuning run (readouts frozen)."""
    out = tmp_path_factory.mktemp("finetuned")
    train, valid = finetune_files
    argv = ["--train", str(train), "--valid", str(valid), "--out", str(out)]
    argv += ["--base-checkpoint", str(tiny_model), "--epochs", str(EPOCHS), "--batch-size", "4"]
    argv += ["--learning-rate", "2e-3", "--freeze", "readouts", "--seed", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "umlip_mace.finetune", *argv],
        env={**os.environ, "OMP_NUM_THREADS": "1", **NO_NETWORK},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def record(finetuned: Path) -> dict:
    return json.loads((finetuned / PROVENANCE_FILE).read_text())


def test_finetune_records_every_epoch_and_the_loss_falls(finetuned: Path, record: dict) -> None:
    checkpoint = finetuned / CHECKPOINT_FILE
    assert set(record) == RECORD_KEYS
    assert record["model_name"] == f"mace-ft-{file_sha256(checkpoint)[:8]}"
    assert record["label_source"] == "dft"
    assert record["trained_materials"] == ["mlearn-Li", "mlearn-Si", "mlearn-Ge"]
    assert (record["n_train_frames"], record["n_valid_frames"]) == (12, 3)
    assert record["hyperparameters"]["learning_rate"] == 2e-3
    epochs = record["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    for epoch in epochs:
        assert set(epoch) == {f.name for f in fields(EpochMetrics)}
        assert all(np.isfinite(v) for v in epoch.values()), epoch
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["valid_stress_mae"] > 0.01  # GPa: real DFT stresses, a tiny model
    argv = record["extra"]["run_train_argv"]
    for option in (
        "--loss=universal",
        "--compute_stress=True",
        "--stress_weight=100.0",
        "--E0s=foundation",
        "--foundation_model_elements=True",
        "--multiheads_finetuning=False",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--stress_key=REF_stress",
        "--lr=0.002",
    ):
        assert option in argv


def test_epoch_metrics_are_mace_own_results_converted(finetuned: Path, record: dict) -> None:
    (results,) = (finetuned / RUN_DIR / "results").glob("*_train.txt")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    evals = {
        line["epoch"]: line
        for line in lines
        if line["mode"] == "eval" and line["head"] == VALID_HEAD and line["epoch"] is not None
    }
    for epoch in record["epochs"]:
        mace_line = evals[epoch["epoch"] - 1]  # mace-torch counts epochs from 0
        assert epoch["valid_stress_mae"] == pytest.approx(
            mace_line["mae_stress"] * GPA_PER_EV_PER_A3
        )
        assert epoch["valid_energy_mae"] == pytest.approx(mace_line["mae_e_per_atom"])
        assert epoch["valid_force_mae"] == pytest.approx(mace_line["mae_f"])
        losses = [
            line["loss"]
            for line in lines
            if line["mode"] == "opt" and line["epoch"] == mace_line["epoch"]
        ]
        assert epoch["train_loss"] == pytest.approx(np.mean(losses))


def test_finetuned_model_keeps_elements_e0s_and_frozen_weights(
    finetuned: Path, record: dict, tiny_model: Path
) -> None:
    base, tuned = load_model(tiny_model), load_model(finetuned / CHECKPOINT_FILE)
    assert tuned.atomic_numbers.tolist() == base.atomic_numbers.tolist()
    assert record["extra"]["atomic_numbers"] == base.atomic_numbers.tolist()
    assert atomic_energies(tuned) == atomic_energies(base)
    assert record["extra"]["e0s_eV"] == {str(z): e for z, e in atomic_energies(base).items()}
    base_parameters = dict(base.named_parameters())
    frozen = record["extra"]["frozen_parameters"]
    assert frozen and all(name.startswith("readouts") for name in frozen)
    for name, parameter in tuned.named_parameters():
        if name.startswith("readouts"):
            assert torch.equal(parameter, base_parameters[name]), name
    assert not torch.equal(tuned.interactions[0].linear.weight, base.interactions[0].linear.weight)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--base-checkpoint": ""}, "'medium-mpa-0' is not in mace-torch's cache"),
        ({"--base-checkpoint": "medium"}, "'medium' is not in mace-torch's cache"),
        ({"--freeze": "no_such_module"}, "matches no MACE parameter"),
        ({"--batch-size": "64"}, "exceeds the 12 training frames"),
        ({"--train": "MO"}, "lacks"),
    ],
)
def test_bad_input_is_a_one_line_error(
    change: dict[str, str],
    message: str,
    finetune_files: tuple[Path, Path],
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    train, valid = finetune_files
    if change.get("--train") == "MO":
        frames = [f for f in read(MLEARN, index=":") if f.info["mlearn_element"] == "Mo"][:4]
        labelled = [labelled_frame(f, frame_label(f), "dft") for f in frames]
        change = {"--train": str(write_training_file(tmp_path / "mo.xyz", labelled))}
    options = {
        "--train": str(train),
        "--valid": str(valid),
        "--out": str(tmp_path / "out"),
        "--base-checkpoint": str(tiny_model),
        **change,
    }
    argv = [item for pair in options.items() for item in pair]
    assert run_main(main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "out" / CHECKPOINT_FILE).exists()


@pytest.fixture(scope="module")
def finetuned_service(finetuned: Path) -> Iterator[ServiceProcess]:
    """The real MACE server started on the fine-tuning output folder."""
    with start_service(finetuned) as service:
        yield service


def test_service_reports_the_finetuned_model(
    finetuned_service: ServiceProcess, finetuned: Path, record: dict
) -> None:
    with grpc.insecure_channel(finetuned_service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(
            pb.GetModelInfoRequest(), timeout=30
        )
    assert info.model_name == record["model_name"]
    assert info.model_name.startswith("mace-ft-")
    assert info.checkpoint_sha256 == file_sha256(finetuned / CHECKPOINT_FILE)
    assert info.provenance["label_source"] == "dft"
    assert info.provenance["base_checkpoint"] == "tiny.model"
    assert info.provenance["epochs"] == str(EPOCHS)
    assert sorted(info.supported_atomic_numbers) == record["extra"]["atomic_numbers"]


class TestFineTunedMACEConformance(ConformanceSuite):
    """The fine-tuned checkpoint passes every conformance check through a real server."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls, finetuned_service: ServiceProcess, finetuned: Path, training_frames: list[Atoms]
    ) -> Iterator[ConformanceTarget]:
        yield mace_target(finetuned / CHECKPOINT_FILE, finetuned_service, training_frames)
