"""Fine-tunes SevenNet with sevenn's own trainer: ``python -m umlip_sevennet.finetune``.

The run follows ``sevenn train`` (its ``train_v2`` flow) with the package's fine-tune
preset (``sevenn/presets/fine_tune.yaml``: Huber loss with delta 0.01, Adam, lr 0.004,
exponential decay 0.99 per epoch, stress in the loss with weight 0.01 on kbar, shift,
scale and convolution denominators frozen), continuing from the shipped SevenNet-0
checkpoint (``7net-0``) or ``--base-checkpoint``. As in ``sevenn``'s continue path, the
checkpoint's shift, scale and convolution denominators are kept, not recomputed from the
fine-tuning data. The model's architecture is taken from the base checkpoint.

Labels: the canonical frames are written as extended XYZ for sevenn's ASE reader
(:func:`to_sevenn_frame`), which turns the ASE stress (tensile positive, xx yy zz yz xz
xy) into its internal stress: negated, in the order xx yy zz xy yz zx, eV/Å^3 (its loss
multiplies by 1602.18 for kbar). Per-epoch MAEs come from sevenn's ``lc.csv`` (energy
eV/atom, forces eV/Å, stress in GPa by sevenn's ``Stress_GPa`` metric) and epoch times
from its ``log.sevenn``; both stay in ``OUT/sevenn/``. The checkpoint with the lowest
validation loss (sevenn's ``checkpoint_best.pth``) becomes ``OUT/checkpoint.pth``.
"""

from __future__ import annotations

import csv
import random
import re
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sevenn
import sevenn._keys as keys
import sevenn.train.graph_dataset as graph_dataset
import torch
import yaml
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from sevenn import util
from sevenn.logger import Logger
from sevenn.main.sevenn import global_config
from sevenn.model_build import build_E3_equivariant_model
from sevenn.parse_input import read_config_yaml
from sevenn.scripts.processing_continue import processing_continue_v2
from sevenn.scripts.processing_epoch import processing_epoch_v2
from sevenn.scripts.train import loader_from_config
from sevenn.train.trainer import Trainer

from umlip_serve import CalculatorSetupError, file_sha256, package_versions
from umlip_serve.finetune import (
    PROVENANCE_FILE,
    EpochMetrics,
    FineTuneError,
    FineTuneSettings,
    ProvenanceRecorder,
    TrainingData,
    frame_label,
    load_training_data,
    parse_finetune_args,
    run_main,
    write_training_file,
)
from umlip_sevennet.checkpoint import DEFAULT_CHECKPOINT, resolve_checkpoint

#: Keys of the labels in the files sevenn reads (its ``data_format_args``).
ENERGY_KEY = "umlip_energy"
FORCE_KEY = "umlip_forces"
STRESS_KEY = "umlip_stress"
#: sevenn's ``data_format_args``: how its ASE reader finds the labels.
DATA_FORMAT_ARGS = {
    "index": ":",
    "energy_key": ENERGY_KEY,
    "force_key": FORCE_KEY,
    "stress_key": STRESS_KEY,
}
#: The preset this driver starts from, inside the sevenn package.
PRESET = "fine_tune.yaml"
#: The preset's hyper-parameters, as the command line's defaults.
DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "learning_rate": 0.004,
    "energy_weight": 1.0,
    "force_weight": 1.0,
    "stress_weight": 0.01,
    "batch_size": 4,
}
#: Per-epoch metrics sevenn records (names in lc.csv: Energy_MAE, Force_MAE, Stress_MAE).
ERROR_RECORD = [["Energy", "MAE"], ["Force", "MAE"], ["Stress_GPa", "MAE"], ["TotalLoss", "None"]]
_ELAPSED = re.compile(r"^Epoch (\d+) elapsed: (?:(\d+) days?, )?(\d+):(\d+):([\d.]+)", re.M)


def to_sevenn_frame(frame: Atoms) -> Atoms:
    """A canonical frame as sevenn's ASE reader takes it (the one label conversion).

    sevenn's ``ase_reader`` with ``energy_key``/``force_key``/``stress_key`` reads the
    total energy (eV), forces (eV/Å) and the stress in ASE's convention (Voigt xx yy zz
    yz xz xy, eV/Å^3, tensile positive) and itself negates and reorders the stress to its
    internal xx yy zz xy yz zx (``sevenn/train/dataload.py::_set_atoms_y``). Explicit keys
    keep sevenn from taking a ``free_energy`` instead of the labelled energy.

    Args:
        frame: canonical frame (labels in its SinglePointCalculator).

    Returns:
        A frame without calculator, labels in ``info``/``arrays`` under
        :data:`ENERGY_KEY`, :data:`FORCE_KEY` and :data:`STRESS_KEY`.

    Raises:
        FineTuneError: the frame is not periodic in three directions (no stress).
    """
    if not frame.pbc.all():
        raise FineTuneError(f"a training frame ({frame.get_chemical_formula()}) is not periodic")
    label = frame_label(frame)
    out = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=True)
    out.info[ENERGY_KEY] = label.energy
    out.info[STRESS_KEY] = full_3x3_to_voigt_6_stress(label.stress)
    out.arrays[FORCE_KEY] = np.array(label.forces, dtype=float)
    return out


def sevenn_config(
    settings: FineTuneSettings, base: Path, model: dict[str, Any], work: Path
) -> dict[str, Any]:
    """The global config ``sevenn train`` builds, from the preset and the settings.

    Args:
        settings: the run's settings.
        base: base checkpoint file.
        model: the base checkpoint's model section (``SevenNetCheckpoint.yaml_dict``).
        work: sevenn's working folder, holding ``train.extxyz`` and ``valid.extxyz``.

    Raises:
        FineTuneError: sevenn rejects a setting (e.g. the device).
    """
    preset_path = Path(sevenn.__file__).parent / "presets" / PRESET
    preset = yaml.safe_load(preset_path.read_text(encoding="utf-8"))
    for key in (keys.TRAIN_SHIFT_SCALE, keys.TRAIN_DENOMINTAOR):
        model[key] = preset["model"][key]
    train = preset["train"]
    train.update(
        {
            keys.RANDOM_SEED: settings.seed,
            keys.EPOCH: settings.epochs,
            keys.OPTIM_PARAM: {"lr": settings.learning_rate},
            keys.FORCE_WEIGHT: settings.force_weight,
            keys.STRESS_WEIGHT: settings.stress_weight,
            keys.PER_EPOCH: settings.epochs + 1,  # no periodic checkpoints
            keys.ERROR_RECORD: ERROR_RECORD,
            keys.DEVICE: settings.device,
        }
    )
    train[keys.CONTINUE][keys.CHECKPOINT] = str(base)
    train[keys.CONTINUE][keys.USE_STATISTIC_VALUES_OF_CHECKPOINT] = True  # train_v2: always
    data = preset["data"]
    data.pop(keys.LOAD_TESTSET, None)
    data.update(
        {
            keys.BATCH_SIZE: settings.batch_size,
            keys.RATIO: 0.0,
            keys.LOAD_TRAINSET: [str(work / "train.extxyz")],
            keys.LOAD_VALIDSET: [str(work / "valid.extxyz")],
            keys.DATA_FORMAT_ARGS: dict(DATA_FORMAT_ARGS),
        }
    )
    input_yaml = work / "input.yaml"
    input_yaml.write_text(
        yaml.safe_dump({"model": model, "train": train, "data": data}, sort_keys=False),
        encoding="utf-8",
    )
    try:
        model_config, train_config, data_config = read_config_yaml(str(input_yaml))
    except (ValueError, RuntimeError) as error:
        raise FineTuneError(f"sevenn rejects the settings: {error}") from error
    train_config.update(  # as `sevenn train` without --distributed
        {
            keys.IS_DDP: False,
            keys.DDP_BACKEND: "nccl",
            keys.LOCAL_RANK: 0,
            keys.RANK: 0,
            keys.WORLD_SIZE: 1,
        }
    )
    config = {k: global_config[k] for k in ("version", "_model_type")}
    config.update({"when": time.ctime(), **model_config, **train_config, **data_config})
    return config


def train_sevenn(
    config: dict[str, Any], work: Path, freeze: Sequence[str], energy_weight: float
) -> dict[str, int]:
    """Runs sevenn's ``train_v2`` flow, freezing parameters whose name starts with a prefix.

    Same steps as ``sevenn.scripts.train.train_v2`` (continue from the checkpoint with its
    statistics, graph datasets, ``Trainer``, ``processing_epoch_v2``), with the freezing
    between building the model and the optimiser, and the energy loss weight (sevenn fixes
    it at 1) set to ``energy_weight``.

    Returns:
        Number of trainable and frozen parameters (scalars).

    Raises:
        FineTuneError: a ``freeze`` prefix matches no parameter.
    """
    logger = Logger()
    logger.switch_file(str(work / "log.sevenn"))
    logger.screen = True  # sevenn's own per-epoch table on the terminal, live
    with logger, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Weights only load failed")
        logger.greeting()
        state_dicts, start_epoch = processing_continue_v2(config)
        datasets = graph_dataset.from_config(config, str(work))
        loaders = {
            k: loader_from_config(config, v, is_train=(k == "trainset"))
            for k, v in datasets.items()
        }
        model = build_E3_equivariant_model(config)
        logger.print_model_info(model, config)
        names = [name for name, _ in model.named_parameters()]
        for prefix in freeze:
            if not any(name.startswith(prefix) for name in names):
                raise FineTuneError(
                    f"--freeze {prefix!r} matches no SevenNet parameter (names start with "
                    f"{sorted({n.split('.')[0] for n in names})})"
                )
        for name, parameter in model.named_parameters():
            if name.startswith(tuple(freeze)):
                parameter.requires_grad_(False)
        trainer = Trainer.from_config(model, config)
        trainer.loss_functions = [
            (loss, energy_weight if loss.name == "Energy" else weight)
            for loss, weight in trainer.loss_functions
        ]
        trainer.load_state_dicts(*state_dicts, strict=True)
        processing_epoch_v2(config, trainer, loaders, start_epoch, working_dir=str(work))
    counts = {"trainable": 0, "frozen": 0}
    for parameter in model.parameters():
        counts["trainable" if parameter.requires_grad else "frozen"] += parameter.numel()
    return counts


def read_learning_curve(work: Path) -> list[EpochMetrics]:
    """Per-epoch metrics from sevenn's ``lc.csv`` and epoch times from ``log.sevenn``.

    MAEs: energy eV/atom, forces eV/Å, stress GPa (sevenn's ``Stress_GPa`` metric);
    losses in sevenn's units (Huber on eV/atom, eV/Å and kbar, weighted).
    """
    seconds = {}
    for match in _ELAPSED.finditer((work / "log.sevenn").read_text(encoding="utf-8")):
        epoch, days, hours, minutes, secs = match.groups()
        seconds[int(epoch)] = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + float(
            secs
        )
    with open(work / "lc.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return [
        EpochMetrics(
            epoch=int(row["epoch"]),
            train_loss=float(row["trainset_TotalLoss"]),
            train_energy_mae=float(row["trainset_Energy_MAE"]),
            train_force_mae=float(row["trainset_Force_MAE"]),
            train_stress_mae=float(row["trainset_Stress_MAE"]),
            valid_loss=float(row["validset_TotalLoss"]),
            valid_energy_mae=float(row["validset_Energy_MAE"]),
            valid_force_mae=float(row["validset_Force_MAE"]),
            valid_stress_mae=float(row["validset_Stress_MAE"]),
            seconds=seconds.get(int(row["epoch"])),
        )
        for row in rows
    ]


def _check_species(data: Sequence[TrainingData], species: Sequence[str]) -> list[str]:
    present = sorted({s for d in data for f in d.frames for s in f.get_chemical_symbols()})
    unknown = [s for s in present if s not in species]
    if unknown:
        raise FineTuneError(f"the base SevenNet checkpoint does not know elements {unknown}")
    return present


def main(argv: Sequence[str] | None = None) -> None:
    """Fine-tunes SevenNet; writes ``OUT/checkpoint.pth`` and ``OUT/provenance.json``."""
    settings = parse_finetune_args("sevennet", argv, defaults=DEFAULTS)
    train, valid = load_training_data(settings)
    if (settings.out / PROVENANCE_FILE).exists():
        raise FineTuneError(f"{settings.out} already holds a fine-tuned model; give a new --out")
    try:
        device = torch.device(settings.device)
    except RuntimeError as error:
        raise FineTuneError(f"unknown device {settings.device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FineTuneError(f"device {settings.device} requested but CUDA is not available")
    try:
        base_name, base_path, modal = resolve_checkpoint(
            settings.base_checkpoint or DEFAULT_CHECKPOINT
        )
    except CalculatorSetupError as error:
        raise FineTuneError(str(error)) from error
    base = util.load_checkpoint(str(base_path))
    if modal is not None or base.config.get("use_modality", False):
        raise FineTuneError(f"{base_name} is multi-fidelity; this driver fine-tunes one fidelity")
    elements = _check_species([train, valid], base.config["chemical_species"])
    torch.set_num_threads(settings.torch_threads)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    work = settings.out / "sevenn"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_training_file(work / "train.extxyz", [to_sevenn_frame(f) for f in train.frames])
    write_training_file(work / "valid.extxyz", [to_sevenn_frame(f) for f in valid.frames])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoint version too old": model keys are fine
        model = base.yaml_dict("continue")["model"]
    config = sevenn_config(settings, base_path, model, work)
    recorder = ProvenanceRecorder(
        model="sevennet",
        settings=settings,
        train=train,
        valid=valid,
        base_checkpoint_name=base_name,
        base_checkpoint_sha256=file_sha256(base_path),
        package_versions=package_versions("sevenn", "torch", "e3nn", "torch_geometric", "ase"),
        trainer="sevenn train_v2 flow (processing_continue_v2, SevenNetGraphDataset, Trainer, "
        f"processing_epoch_v2) with preset {PRESET}",
    )
    print(f"sevenn log: {work / 'log.sevenn'}", flush=True)
    counts = train_sevenn(config, work, settings.freeze, settings.energy_weight)
    for metrics in read_learning_curve(work):
        recorder.epoch(metrics)
    checkpoint = settings.out / "checkpoint.pth"
    shutil.copyfile(work / "checkpoint_best.pth", checkpoint)
    for leftover in [*work.glob("checkpoint_*.pth"), work / "sevenn_data"]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    recorder.extra.update(
        {
            "preset": f"sevenn/presets/{PRESET}",
            "checkpoint_selection": "checkpoint_best.pth: lowest validation TotalLoss",
            "checkpoint_epoch": util.load_checkpoint(str(checkpoint)).epoch,
            "loss": f"{config['loss']} {config['loss_param']}; energy per atom (eV/atom), "
            "forces eV/Å, stress kbar",
            "optimizer": f"{config['optimizer']} {config['optim_param']}",
            "scheduler": f"{config['scheduler']} {config['scheduler_param']}",
            "statistics": "shift, scale and conv_denominator of the base checkpoint, frozen",
            "conv_denominator": config["conv_denominator"],
            "elements": elements,
            "model_species": len(base.config["chemical_species"]),
            "parameters": counts,
            "label_keys": {"energy": ENERGY_KEY, "forces": FORCE_KEY, "stress": STRESS_KEY},
            "sevenn_log": "sevenn/log.sevenn",
            "learning_curve": "sevenn/lc.csv",
        }
    )
    recorder.finish(checkpoint)


if __name__ == "__main__":
    sys.exit(run_main(main))
