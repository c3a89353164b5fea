"""Fine-tunes a MACE model with mace-torch's own training script, ``mace_run_train``.

``python -m umlip_mace.finetune --train FILE --out DIR --base-checkpoint MODEL ...``
converts the canonical training file (:mod:`umlip_serve.finetune`) to the keys
mace-torch reads (:func:`mace_atoms`), runs :func:`mace.cli.run_train.run` in-process
as plain single-head fine-tuning of a local foundation model, and writes
``DIR/checkpoint.model`` (a pickled ``torch.nn.Module``, as ``mace_run_train`` saves it,
which :class:`umlip_mace.MACEPotential` loads) plus ``DIR/provenance.json``. The run's
own files (log, per-epoch metrics) stay in ``DIR/mace_run``.

How the run is set up (SCIENCE.md section 5, read against mace-torch 0.3.16):

- Foundation: ``--foundation_model PATH`` of a local file (``--base-checkpoint``, a
  fine-tuning output folder, or a MACE-MP name already in mace-torch's cache): never a
  download; ``--multiheads_finetuning False`` (no replay data) and
  ``--foundation_model_elements True`` (the model keeps every element of its base).
- E0s: ``--E0s foundation`` (the base model's atomic energies, not refitted).
- Loss: ``--loss universal`` (mace-torch's Huber loss on energy per atom, forces and the
  3x3 stress, which MACE-MP was trained with) with ``--compute_stress True``; default
  weights 1 / 10 / 100 as MACE-MP's recipe; learning rate 1e-4, the value mace-torch
  itself sets for multi-head fine-tuning (its default 0.01 is for training from scratch).
- Per epoch, mace-torch's own ``evaluate`` runs on the validation frames and on all
  training frames; the metrics go to its results log (``mace_run/results/*.txt``, JSON
  lines) and to the provenance record. mace-torch keeps the epoch of lowest validation
  loss as the final model (recorded as ``checkpoint_epoch``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mace  # first: it lets e3nn 0.4.4 torch.load its constants
import numpy as np
import torch
from ase import Atoms
from ase.io import write
from ase.stress import full_3x3_to_voigt_6_stress
from mace import tools as mace_tools
from mace.calculators import foundations_models
from mace.cli import run_train
from mace.tools import torch_geometric
from mace.tools.utils import UniversalEncoder, get_cache_dir

from umlip_mace.checkpoint import DEFAULT_MODEL
from umlip_mace.potential import MACEPotential
from umlip_serve import file_sha256, package_versions
from umlip_serve.checkpoint_scan import checkpoint_globals, disallowed_globals
from umlip_serve.finetune import (
    GPA_PER_EV_PER_A3,
    EpochMetrics,
    FineTuneError,
    FineTuneSettings,
    ProvenanceRecorder,
    frame_label,
    load_training_data,
    parse_finetune_args,
    resolve_finetuned,
    run_main,
)

#: Keys of the labels in the files handed to mace-torch (``--energy_key`` etc.).
ENERGY_KEY, FORCES_KEY, STRESS_KEY = "REF_energy", "REF_forces", "REF_stress"
#: The fine-tuned model in the output folder.
CHECKPOINT_FILE = "checkpoint.model"
#: mace-torch's working folder inside the output folder, and its run name.
RUN_DIR, RUN_NAME = "mace_run", "finetune"
#: mace-torch's name of a single-head model's head (its validation set's name).
VALID_HEAD = "Default"
#: Name under which the training frames are evaluated after each epoch.
TRAIN_HEAD = "umlip_train"
#: MACE-specific defaults of the common command line.
DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-4,
    "energy_weight": 1.0,
    "force_weight": 10.0,
    "stress_weight": 100.0,
}
LOSS = "universal"


def mace_atoms(frame: Atoms) -> Atoms:
    """A canonical training frame with its labels where mace-torch reads them.

    mace-torch reads the total energy (eV) from ``info[ENERGY_KEY]``, forces (eV/Å) from
    ``arrays[FORCES_KEY]`` and the stress from ``info[STRESS_KEY]``; its
    ``AtomicData.from_config`` turns a Voigt 6-vector (xx yy zz yz xz xy, ASE's order)
    into the 3x3 tensor its model predicts as (1/V) dE/d(strain), i.e. eV/Å^3 with ASE's
    sign (tensile positive). So no unit or sign changes: only the keys (mace-torch warns
    that ASE's own ``energy``/``forces``/``stress`` keys are unsafe).

    Args:
        frame: a frame of a canonical file (labels in its calculator).

    Returns:
        A new ``Atoms`` (no calculator) carrying the labels under mace-torch's keys.

    Raises:
        FineTuneError: the frame lacks energy, forces or stress.
    """
    label = frame_label(frame)
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    atoms.info[ENERGY_KEY] = label.energy
    atoms.arrays[FORCES_KEY] = np.array(label.forces, dtype=float)
    atoms.info[STRESS_KEY] = full_3x3_to_voigt_6_stress(label.stress)
    return atoms


def write_mace_file(path: Path, frames: Sequence[Atoms]) -> Path:
    """Writes canonical frames as the extended XYZ file ``mace_run_train`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, [mace_atoms(f) for f in frames], format="extxyz")
    return path


def resolve_base(spec: str) -> tuple[str, Path]:
    """The local foundation model to fine-tune; never downloads.

    Args:
        spec: a MACE model file, a umlip fine-tuning output folder (or its checkpoint),
            a MACE-MP foundation name present in mace-torch's cache, or "" for the
            default foundation model (when cached).

    Returns:
        (name for the provenance, model file).

    Raises:
        FineTuneError: nothing local matches ``spec``.
    """
    finetuned = resolve_finetuned(spec)
    if finetuned is not None:
        return finetuned.model_name, finetuned.path
    name = spec or DEFAULT_MODEL
    if name in foundations_models.mace_mp_urls:
        path = _cached_foundation(name)
        if path is None:
            raise FineTuneError(
                f"MACE foundation model {name!r} is not in mace-torch's cache {get_cache_dir()} "
                "and fine-tuning never downloads: give --base-checkpoint PATH of a local MACE "
                "model file"
            )
        return name, path
    path = Path(name).expanduser()
    if not path.is_file():
        raise FineTuneError(
            f"--base-checkpoint {spec!r} is neither a MACE model file nor a cached MACE-MP "
            "foundation model name"
        )
    return path.name, path.resolve()


def _cached_foundation(name: str) -> Path | None:
    """The cached file of a MACE-MP foundation model (mace-torch's naming), if present."""
    if name == "medium-mpa-0" and os.path.isfile(foundations_models.local_model_path):
        return Path(foundations_models.local_model_path)
    url_name = os.path.basename(foundations_models.mace_mp_urls[name])
    path = get_cache_dir() / "".join(c for c in url_name if c.isalnum() or c in "_")
    return path if path.is_file() else None


def load_model(path: Path) -> torch.nn.Module:
    """A MACE model file on the CPU.

    Raises:
        FineTuneError: the file is unreadable or holds no MACE model.
    """
    refused = disallowed_globals(checkpoint_globals(path), MACEPotential.checkpoint_globals)
    if refused:
        raise FineTuneError(
            f"{path} would import {', '.join(refused[:5])} when unpickled, which a MACE model "
            "never needs; refusing to load it"
        )
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # pickle, zip and torch errors alike
        raise FineTuneError(f"cannot read MACE model {path}: {error}") from error
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_energies_fn"):
        raise FineTuneError(f"{path} holds no MACE model (got {type(model).__name__})")
    return model


def atomic_energies(model: torch.nn.Module) -> dict[int, float]:
    """A MACE model's E0s (eV per element; the first head's of a multi-head model)."""
    energies = model.atomic_energies_fn.atomic_energies.detach().cpu()
    if energies.ndim > 1:
        energies = energies.reshape(-1, energies.shape[-1])[0]
    zs = [int(z) for z in model.atomic_numbers]
    return {z: float(e) for z, e in zip(zs, energies.tolist(), strict=True)}


def run_train_argv(
    settings: FineTuneSettings, base: Path, train_file: Path, valid_file: Path, work: Path
) -> list[str]:
    """The ``mace_run_train`` command line of a fine-tuning run."""
    on_gpu = settings.device.startswith("cuda")
    options = {
        "name": RUN_NAME,
        "seed": settings.seed,
        "work_dir": work,
        "log_level": "WARNING",  # the full log is still written to logs/*_debug.log
        "device": settings.device.split(":")[0],
        "default_dtype": "float64",
        "train_file": train_file,
        "valid_file": valid_file,
        "energy_key": ENERGY_KEY,
        "forces_key": FORCES_KEY,
        "stress_key": STRESS_KEY,
        "foundation_model": base,
        "foundation_model_elements": True,
        "multiheads_finetuning": False,
        "E0s": "foundation",
        "loss": LOSS,
        "compute_stress": True,
        "energy_weight": settings.energy_weight,
        "forces_weight": settings.force_weight,
        "stress_weight": settings.stress_weight,
        "lr": settings.learning_rate,
        "batch_size": settings.batch_size,
        "valid_batch_size": settings.batch_size,
        "max_num_epochs": settings.epochs,
        "eval_interval": 1,
        "error_table": "PerAtomMAEstressvirials",
        "plot": False,
        "pin_memory": on_gpu,
        "enable_cueq": False,
    }
    argv = [f"--{key}={value}" for key, value in options.items()]
    return [*argv, "--save_cpu"]


def apply_freeze(model: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Sets ``requires_grad=False`` on parameters whose name starts with a prefix.

    Returns:
        The names of the frozen parameters.

    Raises:
        FineTuneError: a prefix matches no parameter.
    """
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise FineTuneError(
                f"--freeze {prefix!r} matches no MACE parameter (top-level modules: "
                f"{', '.join(sorted({n.split('.')[0] for n in names}))})"
            )
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad = False
            frozen.append(name)
    return frozen


def _mae(metrics: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value) * scale


@dataclass
class EpochLog:
    """Stands in for mace-torch's ``MetricsLogger``: forwards every line to it and
    reports each finished epoch to the recorder.

    mace-torch logs one ``mode: opt`` line per optimiser step (``loss``) and, after each
    epoch, one ``mode: eval`` line per evaluated set (``mae_e_per_atom`` eV/atom,
    ``mae_f`` eV/Å, ``mae_stress`` eV/Å^3 over the 9 tensor components, ``loss``).
    """

    recorder: ProvenanceRecorder
    metrics_logger: Any
    losses: dict[int, list[float]] = field(default_factory=dict)
    train_eval: dict[int | None, dict[str, Any]] = field(default_factory=dict)
    valid_eval: dict[int | None, dict[str, Any]] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)

    def log(self, entry: dict[str, Any]) -> None:
        """mace-torch's ``MetricsLogger.log``."""
        self.metrics_logger.log(entry)
        line = json.loads(json.dumps(entry, cls=UniversalEncoder))
        epoch = line.get("epoch")
        if line.get("mode") == "opt":
            self.losses.setdefault(int(epoch), []).append(float(line["loss"]))
        elif line.get("mode") == "eval" and line.get("head") == TRAIN_HEAD:
            self.train_eval[epoch] = line
        elif line.get("mode") == "eval":
            self.valid_eval[epoch] = line
            now = time.monotonic()
            if epoch is not None:
                self.recorder.epoch(self._metrics(int(epoch), now - self.last))
            self.last = now

    def _metrics(self, epoch: int, seconds: float) -> EpochMetrics:
        train, valid = self.train_eval.get(epoch, {}), self.valid_eval[epoch]
        losses = self.losses.get(epoch, [])
        return EpochMetrics(
            epoch=epoch + 1,
            train_loss=float(np.mean(losses)) if losses else None,
            train_energy_mae=_mae(train, "mae_e_per_atom"),
            train_force_mae=_mae(train, "mae_f"),
            train_stress_mae=_mae(train, "mae_stress", GPA_PER_EV_PER_A3),
            valid_loss=_mae(valid, "loss"),
            valid_energy_mae=_mae(valid, "mae_e_per_atom"),
            valid_force_mae=_mae(valid, "mae_f"),
            valid_stress_mae=_mae(valid, "mae_stress", GPA_PER_EV_PER_A3),
            seconds=seconds,
        )

    def before_training(self) -> dict[str, float | None]:
        """MAEs of the base model (mace-torch's evaluation before the first epoch)."""
        train, valid = self.train_eval.get(None, {}), self.valid_eval.get(None, {})
        return {
            "train_energy_mae": _mae(train, "mae_e_per_atom"),
            "train_force_mae": _mae(train, "mae_f"),
            "train_stress_mae": _mae(train, "mae_stress", GPA_PER_EV_PER_A3),
            "valid_energy_mae": _mae(valid, "mae_e_per_atom"),
            "valid_force_mae": _mae(valid, "mae_f"),
            "valid_stress_mae": _mae(valid, "mae_stress", GPA_PER_EV_PER_A3),
        }

    def lowest_valid_loss_epoch(self) -> int | None:
        """The epoch (1-based) mace-torch keeps: the first of lowest validation loss."""
        losses = {e: v["loss"] for e, v in self.valid_eval.items() if e is not None}
        return None if not losses else min(losses, key=lambda e: (losses[e], e)) + 1


@contextlib.contextmanager
def hooked_trainer(
    freeze: Sequence[str], make_log: Callable[[Any], EpochLog], frozen: list[str]
) -> Iterator[None]:
    """Wraps ``mace.tools.train`` (what ``run_train`` calls) for one run.

    Before training starts it freezes the ``freeze`` prefixes (names appended to
    ``frozen``), adds the training frames as an extra evaluated set (unshuffled, no frame
    dropped; listed first, so mace-torch still selects the model on the validation
    loss) and replaces the metrics logger by ``make_log(logger)``.
    """
    original = mace_tools.train

    def train(**kwargs: Any) -> Any:
        frozen.extend(apply_freeze(kwargs["model"], freeze))
        loader = kwargs["train_loader"]
        train_eval = torch_geometric.dataloader.DataLoader(
            dataset=loader.dataset, batch_size=loader.batch_size, shuffle=False, drop_last=False
        )
        kwargs["valid_loaders"] = {TRAIN_HEAD: train_eval, **kwargs["valid_loaders"]}
        kwargs["logger"] = make_log(kwargs["logger"])
        return original(**kwargs)

    mace_tools.train = train
    try:
        yield
    finally:
        mace_tools.train = original


@contextlib.contextmanager
def restored_globals() -> Iterator[None]:
    """Undoes what ``run_train`` sets process-wide: root logger handlers, filters and
    level, and torch's default dtype."""
    root = logging.getLogger()
    handlers, filters, level = list(root.handlers), list(root.filters), root.level
    dtype = torch.get_default_dtype()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers, root.filters = handlers, filters
        root.setLevel(level)
        torch.set_default_dtype(dtype)


def main(argv: Sequence[str] | None = None) -> Path:
    """Fine-tunes MACE as the command line says; returns the checkpoint written.

    Raises:
        FineTuneError: bad input or settings (one-line message).
    """
    settings = parse_finetune_args("mace", argv, DEFAULTS)
    torch.set_num_threads(settings.torch_threads)
    train, valid = load_training_data(settings)
    base_name, base_path = resolve_base(settings.base_checkpoint)
    base = load_model(base_path)
    base_zs = [int(z) for z in base.atomic_numbers]
    data_zs = {int(z) for frames in (train.frames, valid.frames) for f in frames for z in f.numbers}
    if missing := sorted(data_zs - set(base_zs)):
        raise FineTuneError(
            f"the training data hold elements {missing} that the base model {base_name} lacks "
            "(MACE fine-tuning keeps the base model's elements)"
        )
    if settings.batch_size > len(train.frames):
        raise FineTuneError(
            f"--batch-size {settings.batch_size} exceeds the {len(train.frames)} training "
            "frames (mace-torch drops incomplete batches)"
        )
    apply_freeze(base, settings.freeze)  # checks the prefixes before a long run

    out = settings.out.resolve()
    work = out / RUN_DIR
    shutil.rmtree(work, ignore_errors=True)  # mace-torch appends to an old run's logs
    train_file = write_mace_file(work / "train.xyz", train.frames)
    valid_file = write_mace_file(work / "valid.xyz", valid.frames)
    argv_mace = run_train_argv(settings, base_path, train_file, valid_file, work)
    recorder = ProvenanceRecorder(
        model="mace",
        settings=settings,
        train=train,
        valid=valid,
        base_checkpoint_name=base_name,
        base_checkpoint_sha256=file_sha256(base_path),
        package_versions=package_versions("mace-torch", "torch", "e3nn", "ase", "numpy"),
        trainer=f"mace.cli.run_train.run (mace_run_train of mace-torch {mace.__version__}), "
        f"single-head fine-tuning, loss={LOSS}",
    )
    logs: list[EpochLog] = []
    frozen: list[str] = []

    def make_log(logger: Any) -> EpochLog:
        logs.append(EpochLog(recorder, logger))
        return logs[-1]

    args = mace_tools.build_default_arg_parser().parse_args(argv_mace)
    with restored_globals(), hooked_trainer(settings.freeze, make_log, frozen):
        run_train.run(args)

    saved = work / f"{RUN_NAME}.model"
    if not logs or not saved.is_file():
        raise FineTuneError(f"mace_run_train wrote no model; see its log in {work / 'logs'}")
    model = load_model(saved)
    if [int(z) for z in model.atomic_numbers] != base_zs:
        raise FineTuneError("the fine-tuned model lost elements of its base model")
    checkpoint = out / CHECKPOINT_FILE
    os.replace(saved, checkpoint)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # optimiser states
    (work / f"{RUN_NAME}_compiled.model").unlink(missing_ok=True)
    recorder.extra.update(
        {
            "run_train_argv": argv_mace,
            "atomic_numbers": base_zs,
            "e0s_eV": {str(z): e for z, e in atomic_energies(model).items()},
            "checkpoint_epoch": logs[-1].lowest_valid_loss_epoch(),
            "frozen_parameters": frozen,
            "before_training": logs[-1].before_training(),
            "dtype": "float64",
            "metrics": "train MAEs: mace-torch's evaluate() on all training frames after each "
            "epoch; train_loss: mean of its per-step losses (it drops an incomplete last "
            "batch); stress MAE over the 9 components of the 3x3 tensor",
            "mace_log_dir": str(work / "logs"),
        }
    )
    recorder.finish(checkpoint)
    return checkpoint


if __name__ == "__main__":
    sys.exit(run_main(main))
