"""Fine-tuning MatterSim with its own script: label units, a real run, the served result.

The label tests run MatterSim's ``finetune_mattersim.py`` in this process (through the
same worker as a real run) up to ``Potential.train_model`` and inspect the data loader
and loss it passes. One real fine-tune (3 epochs on 12 mlearn DFT frames, 4 validation
frames, under ``torchrun``) runs once per module from the session's tiny checkpoint;
its checkpoint is then served by a real service process and passes the conformance kit.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import test_mattersim_conformance as conformance
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from conftest import start_service
from mattersim.forcefield.potential import Potential, batch_to_dict

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_mattersim import MatterSimPotential, finetune_worker
from umlip_mattersim.finetune import (
    CHECKPOINT_FILE,
    main,
    read_model_args,
    script_arguments,
    write_script_input,
)
from umlip_serve import ALL_PROPERTIES, Settings, StructureOutput, atoms_to_batch, file_sha256
from umlip_serve.conformance import ConformanceTarget
from umlip_serve.finetune import (
    FineTuneError,
    FineTuneSettings,
    Label,
    frame_label,
    labelled_frame,
    read_training_file,
    write_training_file,
)
from umlip_serve.testing import NO_NETWORK, shared_data
from umlip_wire.process import ServiceProcess

MLEARN = shared_data(__file__) / "mlearn-elastic-dft.xyz"
EPOCHS = 3
#: A known canonical stress (eV/Å^3, tensile positive) with six distinct components.
STRESS = np.array([[0.011, -0.002, 0.004], [-0.002, -0.007, 0.0015], [0.004, 0.0015, 0.003]])
#: The script's per-epoch log line (loguru; 4 decimals).
LOG_LINE = re.compile(
    r"train: Loss: ([\d.]+), MAE\(e\): ([\d.]+), MAE\(f\): ([\d.]+), MAE\(s\): ([\d.]+)"
)


@dataclass
class ScriptView:
    """What MatterSim's script hands ``Potential.train_model``."""

    potential: Potential
    loader: Any
    loss: torch.nn.Module
    kwargs: dict[str, Any]


def run_script_until_training(
    frames: list[Atoms], base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ScriptView:
    """Runs ``finetune_mattersim.py`` in-process (one gloo rank) with our arguments and
    returns what it passes to ``train_model`` instead of training."""
    settings = FineTuneSettings(train=tmp_path / "-", out=tmp_path, batch_size=len(frames))
    pkl = write_script_input(frames, tmp_path / "train.pkl")
    args = script_arguments(
        settings, base, pkl, pkl, tmp_path / "results", read_model_args(base, ())
    )
    seen: dict[str, Any] = {}

    def capture(
        self: Potential, dataloader: Any, val_dataloader: Any, loss: Any, **kwargs: Any
    ) -> None:
        seen.update(potential=self, loader=dataloader, loss=loss, kwargs=kwargs)

    monkeypatch.setattr(Potential, "train_model", capture)
    # restored after the test: the worker wraps these and registers absent modules
    monkeypatch.setattr(Potential, "from_checkpoint", Potential.__dict__["from_checkpoint"])
    monkeypatch.setattr(Potential, "train_one_epoch", Potential.train_one_epoch)
    for name in ("wandb", "mp_api", "mp_api.client"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}
    for key, value in {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(finetune_worker.METRICS_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", ["finetune_worker", *args])
    try:
        finetune_worker.main()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return ScriptView(**seen)


def _labelled(atoms: Atoms, seed: int) -> Atoms:
    forces = np.random.default_rng(seed).normal(scale=0.3, size=(len(atoms), 3))
    return labelled_frame(atoms, Label(-5.4 * len(atoms) + 0.37, forces, STRESS), "dft")


def test_known_label_reaches_the_trainer_in_gpa_tensile_positive(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.random.default_rng(1).normal(scale=0.03, size=atoms.positions.shape)
    path = write_training_file(tmp_path / "t.xyz", [_labelled(atoms, 2)])
    frames = read_training_file(path).frames
    label = frame_label(frames[0])
    np.testing.assert_allclose(label.stress, STRESS, rtol=1e-12)
    view = run_script_until_training(frames, tiny_model, tmp_path, monkeypatch)
    (graph,) = list(view.loader)
    # finetune_mattersim.py: stresses.append(atoms.get_stress(voigt=False) / GPa)
    gpa = (label.stress / units.GPa).astype(np.float32)
    np.testing.assert_array_equal(graph.stress.numpy(), gpa[None])
    assert graph.stress[0, 0, 0] > 0 > graph.stress[0, 1, 1]  # tensile xx stays positive
    assert float(graph.stress[0, 0, 2]) == pytest.approx(0.004 * 160.21766208, rel=1e-6)
    assert graph.energy.numpy().tolist() == [np.float32(label.energy)]  # total eV
    np.testing.assert_array_equal(graph.forces.numpy(), label.forces.astype(np.float32))
    # stress is in the loss, with the script's Huber loss and our ratios
    assert view.kwargs["include_stresses"] is True and view.kwargs["include_forces"] is True
    assert view.kwargs["stress_loss_ratio"] == 0.1 and view.kwargs["force_loss_ratio"] == 1.0
    assert isinstance(view.loss, torch.nn.HuberLoss) and view.loss.delta == 0.01


def test_served_labels_give_zero_trainer_error(
    tmp_path: Path,
    tiny_model: Path,
    training_frames: list[Atoms],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Canonical labels from the served (eV/Å^3, ASE sign) model, read by the script,
    match the trainer's own prediction of the same model; negated stresses do not."""
    served = MatterSimPotential(Settings(checkpoint=str(tiny_model), dtype="float32"))
    served.load()
    structures = conformance.conformance_structures(training_frames)
    frames = []
    for atoms, result in zip(
        structures, served.calculate(atoms_to_batch(structures), ALL_PROPERTIES), strict=True
    ):
        assert isinstance(result, StructureOutput) and result.stress is not None
        xx, yy, zz, yz, xz, xy = result.stress
        stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        frames.append(labelled_frame(atoms, Label(result.energy, result.forces, stress), "dft"))
    path = write_training_file(tmp_path / "served.xyz", frames)
    view = run_script_until_training(
        read_training_file(path).frames, tiny_model, tmp_path, monkeypatch
    )
    (batch,) = list(view.loader)
    prediction = view.potential.forward(
        batch_to_dict(batch, device="cpu"), include_forces=True, include_stresses=True
    )
    args = (view.loss, True, True, True, 1.0, 0.1)
    _, e_mae, f_mae, s_mae = view.potential.loss_calc(batch, prediction, *args)
    assert e_mae.detach().item() < 1e-5  # eV/atom
    assert f_mae.detach().item() < 1e-4  # eV/Å
    assert s_mae.detach().item() < 1e-4  # GPa
    batch.stress = -batch.stress
    _, _, _, flipped = view.potential.loss_calc(batch, prediction, *args)
    assert flipped.detach().item() > 0.5  # GPa


def test_missing_base_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    frames = [_labelled(bulk("Si", "diamond", a=5.43), seed) for seed in range(2)]
    path = write_training_file(tmp_path / "t.xyz", frames)
    with pytest.raises(FineTuneError, match="never downloads: give --base-checkpoint PATH"):
        main(["--train", str(path), "--out", str(tmp_path / "out")])  # HOME has no cache


def test_unknown_freeze_prefix_is_refused(tiny_model: Path) -> None:
    with pytest.raises(FineTuneError, match="matches no M3Gnet parameter"):
        read_model_args(tiny_model, ("atom_embeddings_typo",))
    with pytest.raises(FineTuneError, match="leaves no parameter to train"):
        read_model_args(tiny_model, ("",))


# --- one real fine-tune, served -------------------------------------------------------


@dataclass
class FineTuned:
    """A finished fine-tuning run."""

    out: Path
    checkpoint: Path
    record: dict[str, Any]
    stdout: str


def mlearn_frames() -> list[Atoms]:
    """16 mlearn DFT training frames: 8 Li (2 atoms), 4 Mo (54), 4 Si (64)."""
    frames = [f for f in read(MLEARN, index=":") if f.info["mlearn_split"] == "train"]
    chosen = []
    for element, count in (("Li", 8), ("Mo", 4), ("Si", 4)):
        chosen += [f for f in frames if f.info["mlearn_element"] == element][:count]
    return chosen


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> FineTuned:
    """``python -m umlip_mattersim.finetune`` on 16 canonical DFT frames, 3 epochs."""
    work = tmp_path_factory.mktemp("finetune")
    canonical = [
        labelled_frame(f, frame_label(f), "dft", {"material_id": f.info["mlearn_element"]})
        for f in mlearn_frames()
    ]
    train = write_training_file(work / "train.xyz", canonical)
    out = work / "out"
    # The tiny base's energy shifts miss Mo and fit Li poorly: a high learning rate and
    # six steps per epoch make the loss fall clearly within three epochs.
    command = [
        sys.executable, "-m", "umlip_mattersim.finetune", "--train", str(train),
        "--out", str(out), "--base-checkpoint", str(tiny_model), "--epochs", str(EPOCHS),
        "--batch-size", "2", "--learning-rate", "5e-3", "--valid-fraction", "0.25",
        "--freeze", "atom_embedding", "--seed", "0",
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **NO_NETWORK}, timeout=600
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    record = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    return FineTuned(out, out / CHECKPOINT_FILE, record, run.stdout)


def test_training_loss_went_down(finetuned: FineTuned) -> None:
    losses = [e["train_loss"] for e in finetuned.record["epochs"]]
    assert len(losses) == EPOCHS
    assert losses[-1] < losses[0]


def test_provenance_has_every_field(finetuned: FineTuned, tiny_model: Path) -> None:
    record = finetuned.record
    sha = file_sha256(finetuned.checkpoint)
    assert record["kind"] == "umlip-finetune" and record["model"] == "mattersim"
    assert record["model_name"] == f"mattersim-ft-{sha[:8]}"
    assert record["checkpoint_file"] == CHECKPOINT_FILE and record["checkpoint_sha256"] == sha
    assert record["base_checkpoint_sha256"] == file_sha256(tiny_model)
    assert record["label_source"] == "dft"
    assert (record["n_train_frames"], record["n_valid_frames"]) == (12, 4)
    assert record["trained_materials"] == ["Li", "Mo", "Si"]  # 2 Li, 2 Mo held out
    assert record["hyperparameters"]["freeze"] == ["atom_embedding"]
    assert "--include_stresses" in record["extra"]["script_arguments"]
    assert record["extra"]["elements"] == [3, 14, 42]
    for key in ("training_data", "validation_data", "package_versions", "created", "trainer"):
        assert record[key]
    for epoch in record["epochs"]:
        for key, value in epoch.items():
            assert value is not None and math.isfinite(value) and value >= 0, (key, value)
    assert [e["epoch"] for e in record["epochs"]] == list(range(1, EPOCHS + 1))


def test_recorded_metrics_are_the_scripts_logged_ones(finetuned: FineTuned) -> None:
    """The script's own log lines (4 decimals) show the recorded training metrics."""
    logged = [tuple(map(float, m)) for m in LOG_LINE.findall(finetuned.stdout)]
    recorded = [
        (e["train_loss"], e["train_energy_mae"], e["train_force_mae"], e["train_stress_mae"])
        for e in finetuned.record["epochs"]
    ]
    assert len(logged) == EPOCHS
    np.testing.assert_allclose(logged, recorded, atol=5.1e-5, rtol=0)


def test_frozen_parameters_kept_their_values(finetuned: FineTuned, tiny_model: Path) -> None:
    base = torch.load(tiny_model, map_location="cpu")["model"]
    tuned = torch.load(finetuned.checkpoint, map_location="cpu")["model"]
    assert torch.equal(
        base["atom_embedding.mlp.0.linear.weight"], tuned["atom_embedding.mlp.0.linear.weight"]
    )
    changed = [k for k in base if k.startswith("graph_conv") and not torch.equal(base[k], tuned[k])]
    assert changed


@pytest.fixture(scope="module")
def finetuned_service(finetuned: FineTuned) -> Iterator[ServiceProcess]:
    """The fine-tuned checkpoint served through UMLIP_CHECKPOINT=<output folder>."""
    with start_service(finetuned.out) as service:
        yield service


def test_service_reports_the_finetuned_model(
    finetuned: FineTuned, finetuned_service: ServiceProcess
) -> None:
    with grpc.insecure_channel(finetuned_service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(
            pb.GetModelInfoRequest(), timeout=30
        )
    assert info.model_name == finetuned.record["model_name"]
    assert info.model_name.startswith("mattersim-ft-")
    assert info.checkpoint_sha256 == file_sha256(finetuned.checkpoint)
    assert info.provenance["label_source"] == "dft"
    assert info.provenance["epochs"] == str(EPOCHS)


class TestFineTunedConformance(conformance.TestMatterSimConformance):
    """The fine-tuned checkpoint, served, passes the conformance kit (and its stresses
    still resolve sign and Voigt order)."""

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_target(
        cls,
        finetuned: FineTuned,
        finetuned_service: ServiceProcess,
        training_frames: list[Atoms],
    ) -> Iterator[ConformanceTarget]:
        yield conformance.mattersim_target(finetuned.checkpoint, finetuned_service, training_frames)
