"""Fine-tunes MatterSim with its own script, ``mattersim/training/finetune_mattersim.py``.

``python -m umlip_mattersim.finetune --train FILE --out DIR --base-checkpoint FILE ...``
converts the canonical training file (extended XYZ, ASE convention) into the pickled
list of ``ase.Atoms`` the script reads, starts the script under ``torchrun`` (it reads
``LOCAL_RANK`` at import; one process, gloo backend on CPU) with stress in the loss
(``--include_stresses``), streams its log, reports each epoch's metrics from its own
``train_one_epoch`` to the provenance record, and copies the script's
``best_model.pth`` (lowest validation loss, EMA weights, ``Potential.save`` format) to
``OUT/checkpoint.pth``, which ``Potential.from_checkpoint`` and the service load.

Units: the script reads ``atoms.get_stress(voigt=False) / ase.units.GPa``, so the
trainer holds stress in GPa with ASE's sign (tensile positive), total energy in eV and
forces in eV/Å; its MAEs are energy per atom (eV/atom), forces per component (eV/Å)
and stress per component (GPa). Its loss is ``HuberLoss(delta=0.01)`` on energy per
atom + ``force_loss_ratio`` x forces + ``stress_loss_ratio`` x stress.

Never downloads: the base checkpoint is a file, or a pretrained name already in
mattersim's cache (``~/.local/mattersim/pretrained_models``).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from mattersim.forcefield.m3gnet.m3gnet import M3Gnet

from umlip_mattersim import finetune_worker
from umlip_mattersim.checkpoint import DEFAULT_MODEL, PRETRAINED, cache_dir
from umlip_serve import file_sha256, package_versions
from umlip_serve.finetune import (
    EpochMetrics,
    FineTuneError,
    FineTuneSettings,
    Label,
    ProvenanceRecorder,
    frame_label,
    load_training_data,
    parse_finetune_args,
    run_main,
)

MODEL = "mattersim"
CHECKPOINT_FILE = "checkpoint.pth"
LOG_FILE = "mattersim_finetune.log"
#: The script's own defaults (learning rate 2e-4, stress ratio 0.1), small batches.
DEFAULTS: dict[str, Any] = {"learning_rate": 2e-4, "batch_size": 4, "stress_weight": 0.1}
#: The script's early stopping (its default): epochs without a better validation loss.
EARLY_STOP_PATIENCE = 10
_VERSIONED = ("mattersim", "torch", "torch-geometric", "e3nn", "ase", "numpy")


def mattersim_frame(atoms: Atoms, label: Label) -> Atoms:
    """The frame MatterSim's fine-tune script reads for one canonical label.

    The script takes ``ase.Atoms`` and converts their results itself
    (``finetune_mattersim.py``: ``atoms.get_potential_energy()``, ``atoms.get_forces()``,
    ``atoms.get_stress(voigt=False) / GPa``), so the canonical values pass unchanged:
    total energy (eV), forces (eV/Å), stress (eV/Å^3, tensile positive, ASE Voigt). The
    trainer then holds stress in GPa, tensile positive (``label.stress / ase.units.GPa``).

    Raises:
        FineTuneError: the frame is not periodic in all three directions (MatterSim
            would put it in a vacuum box, where its stress label has no meaning).
    """
    if not np.all(atoms.pbc):
        raise FineTuneError(
            f"a training frame ({atoms.get_chemical_formula()}) is not periodic in all "
            "three directions; its stress is undefined"
        )
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    frame.calc = SinglePointCalculator(
        frame,
        energy=float(label.energy),
        forces=np.array(label.forces, dtype=float),
        stress=full_3x3_to_voigt_6_stress(np.asarray(label.stress, dtype=float)),
    )
    return frame


def write_script_input(frames: Sequence[Atoms], path: Path) -> Path:
    """Writes canonical frames as the script's ``.pkl`` input (a pickled Atoms list)."""
    converted = [mattersim_frame(atoms, frame_label(atoms)) for atoms in frames]
    with open(path, "wb") as stream:
        pickle.dump(converted, stream)
    return path


def resolve_base_checkpoint(spec: str) -> Path:
    """The base checkpoint file: a path, or a pretrained name cached by mattersim.

    Raises:
        FineTuneError: no such file, or a pretrained model that is not cached.
    """
    name = spec or DEFAULT_MODEL
    key = name.lower().removesuffix(".pth")
    if key in PRETRAINED:
        path = cache_dir() / PRETRAINED[key]
        if path.is_file():
            return path
        raise FineTuneError(
            f"{name} is not in mattersim's cache {cache_dir()} and fine-tuning never "
            "downloads: give --base-checkpoint PATH (a Potential.save checkpoint)"
        )
    path = Path(name).expanduser()
    if not path.is_file():
        raise FineTuneError(f"base checkpoint {path} does not exist")
    return path.resolve()


def read_model_args(path: Path, freeze: Sequence[str]) -> dict[str, Any]:
    """The M3Gnet arguments of a checkpoint; checks the freeze prefixes against it.

    Raises:
        FineTuneError: not an M3Gnet ``Potential.save`` checkpoint, a prefix that names
            no parameter, or prefixes that freeze every parameter.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu")
        if checkpoint["model_name"] != "m3gnet":
            raise ValueError(f"model_name is {checkpoint['model_name']!r}, not 'm3gnet'")
        model_args = dict(checkpoint["model_args"])
    except Exception as error:  # torch.load and missing keys raise many types
        raise FineTuneError(f"{path} is not a MatterSim M3Gnet checkpoint: {error}") from error
    names = [name for name, _ in M3Gnet(device="cpu", **model_args).named_parameters()]
    for prefix in freeze:
        if not any(name.startswith(prefix) for name in names):
            raise FineTuneError(
                f"--freeze {prefix!r} matches no M3Gnet parameter (names start with "
                f"{sorted({n.split('.')[0] for n in names})})"
            )
    if freeze and all(any(n.startswith(p) for p in freeze) for n in names):
        raise FineTuneError("--freeze leaves no parameter to train")
    return model_args


def script_arguments(
    settings: FineTuneSettings,
    base: Path,
    train_pkl: Path,
    valid_pkl: Path,
    save_path: Path,
    model_args: dict[str, Any],
) -> list[str]:
    """The fine-tune script's command line for these settings.

    MatterSim's loss weighs the energy term 1, so the force and stress ratios passed are
    ``force_weight / energy_weight`` and ``stress_weight / energy_weight`` (Adam's step
    does not depend on the loss's overall scale, up to its eps and gradient clipping).

    Raises:
        FineTuneError: energy weight 0, or a device other than ``cpu`` / ``cuda``.
    """
    if settings.energy_weight <= 0:
        raise FineTuneError("MatterSim's loss always includes energy: --energy-weight must be > 0")
    if settings.device not in ("cpu", "cuda"):
        raise FineTuneError(
            f"--device {settings.device!r}: MatterSim's script takes cpu or cuda "
            "(torchrun's LOCAL_RANK picks the GPU)"
        )
    return [
        f"--train_data_path={train_pkl}",
        f"--valid_data_path={valid_pkl}",
        f"--load_model_path={base}",
        f"--save_path={save_path}",
        "--save_checkpoint",
        f"--device={settings.device}",
        f"--cutoff={model_args['cutoff']}",
        f"--threebody_cutoff={model_args['threebody_cutoff']}",
        f"--epochs={settings.epochs}",
        f"--batch_size={settings.batch_size}",
        f"--lr={settings.learning_rate}",
        "--include_forces",
        "--include_stresses",
        f"--force_loss_ratio={settings.force_weight / settings.energy_weight}",
        f"--stress_loss_ratio={settings.stress_weight / settings.energy_weight}",
        f"--early_stop_patience={EARLY_STOP_PATIENCE}",
        f"--seed={settings.seed}",
        "--no-re_normalize",
    ]


def run_script(
    arguments: list[str],
    settings: FineTuneSettings,
    metrics: Path,
    log: Path,
    on_output: Callable[[], None],
) -> None:
    """Runs the script under ``torchrun`` (one process), streaming its output to stdout
    and ``log``; ``on_output`` is called after every line.

    Raises:
        FineTuneError: the script failed (the message names the log file).
    """
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
        "-m", finetune_worker.__name__, *arguments,
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(settings.torch_threads),
        "PYTHONUNBUFFERED": "1",
        finetune_worker.FREEZE_ENV: json.dumps(list(settings.freeze)),
        finetune_worker.METRICS_ENV: str(metrics),
    }
    last = ""
    with open(log, "w", encoding="utf-8") as stream:
        stream.write(" ".join(command) + "\n")
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            stream.write(line)
            last = line.strip() or last
            on_output()
        code = process.wait()
    if code != 0:
        raise FineTuneError(f"MatterSim's fine-tune script failed (exit {code}): {last} ({log})")


def epoch_metrics(metrics: Path, complete_only: bool = False) -> list[EpochMetrics]:
    """The per-epoch metrics the trainer's ``train_one_epoch`` returned so far.

    Energy MAE is per atom (eV/atom), force MAE per component (eV/Å), stress MAE per
    component in GPa (the trainer's units; no conversion needed); each is the trainer's
    mean over batches. Epochs are numbered from 1.

    Args:
        metrics: the worker's JSON-lines file (absent = nothing yet).
        complete_only: leave out an epoch whose validation pass has not been written.
    """
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    text = metrics.read_text(encoding="utf-8") if metrics.is_file() else ""
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):  # a line being written is read on the next poll
            row = json.loads(line)
            rows.setdefault(row["epoch"], {})[row["mode"]] = row
    result = []
    for epoch in sorted(rows):
        train, valid = rows[epoch].get("train", {}), rows[epoch].get("val", {})
        if complete_only and not valid:
            continue
        result.append(
            EpochMetrics(
                epoch=epoch + 1,
                train_loss=train.get("loss"),
                train_energy_mae=train.get("mae_energy_ev_per_atom"),
                train_force_mae=train.get("mae_forces_ev_per_a"),
                train_stress_mae=train.get("mae_stress_gpa"),
                valid_loss=valid.get("loss"),
                valid_energy_mae=valid.get("mae_energy_ev_per_atom"),
                valid_force_mae=valid.get("mae_forces_ev_per_a"),
                valid_stress_mae=valid.get("mae_stress_gpa"),
                seconds=train.get("seconds", 0.0) + valid.get("seconds", 0.0),
            )
        )
    return result


def report_new_epochs(recorder: ProvenanceRecorder, metrics: Path, final: bool = False) -> None:
    """Passes the epochs the trainer finished since the last call to ``recorder``."""
    for epoch in epoch_metrics(metrics, complete_only=not final)[len(recorder.epochs) :]:
        recorder.epoch(epoch)


def main(argv: Sequence[str] | None = None) -> Path:
    """Fine-tunes MatterSim; returns the checkpoint written (``OUT/checkpoint.pth``).

    Raises:
        FineTuneError: bad input or settings, or the script failed.
    """
    settings = parse_finetune_args(MODEL, argv, DEFAULTS)
    torch.set_num_threads(settings.torch_threads)
    train, valid = load_training_data(settings)
    base = resolve_base_checkpoint(settings.base_checkpoint)
    model_args = read_model_args(base, settings.freeze)
    numbers = {int(z) for data in (train, valid) for f in data.frames for z in f.numbers}
    if max(numbers) > int(model_args["max_z"]):
        raise FineTuneError(
            f"the data hold Z={max(numbers)}; the model covers up to Z={model_args['max_z']}"
        )
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mattersim-run-", dir=out) as scratch:
        work = Path(scratch)
        arguments = script_arguments(
            settings,
            base,
            write_script_input(train.frames, work / "train.pkl"),
            write_script_input(valid.frames, work / "valid.pkl"),
            work / "results",
            model_args,
        )
        recorder = ProvenanceRecorder(
            model=MODEL,
            settings=settings,
            train=train,
            valid=valid,
            base_checkpoint_name=settings.base_checkpoint or DEFAULT_MODEL,
            base_checkpoint_sha256=file_sha256(base),
            package_versions=package_versions(*_VERSIONED),
            trainer="mattersim/training/finetune_mattersim.py via torchrun (1 process, "
            f"{'gloo' if settings.device == 'cpu' else 'nccl'}), HuberLoss(delta=0.01), "
            "--include_stresses",
        )
        metrics = work / "metrics.jsonl"
        run_script(
            arguments,
            settings,
            metrics,
            out / LOG_FILE,
            functools.partial(report_new_epochs, recorder, metrics),
        )
        report_new_epochs(recorder, metrics, final=True)
        best = work / "results" / "best_model.pth"
        if not best.is_file():
            raise FineTuneError(f"MatterSim's script wrote no {best.name} (see {out / LOG_FILE})")
        checkpoint = out / CHECKPOINT_FILE
        shutil.copyfile(best, checkpoint)
    saved = torch.load(checkpoint, map_location="cpu")
    recorder.extra.update(
        {
            "script_arguments": [a.replace(str(work), "<scratch>") for a in arguments],
            "best_epoch": int(saved["last_epoch"]) + 1,
            "best_validation_metrics": saved["validation_metrics"],
            "model_args": model_args,
            "elements": sorted(numbers),
            "energy_normalizer": "base checkpoint's (--no-re_normalize)",
            "weights": "EMA (decay 0.99) of the best epoch by validation loss",
            "mae_definitions": "trainer's mean over batches: energy per atom, forces and "
            "stress per component",
        }
    )
    recorder.finish(checkpoint)
    return checkpoint


if __name__ == "__main__":
    sys.exit(run_main(main))
