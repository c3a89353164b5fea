"""Runs MatterSim's own fine-tune script inside a ``torchrun`` worker, with three hooks.

``python -m torch.distributed.run --standalone --nproc_per_node=1 -m
umlip_mattersim.finetune_worker <script arguments>`` executes
``mattersim.training.finetune_mattersim`` as ``__main__`` (its argument parser, data
loading, ``Potential.from_checkpoint`` and ``Potential.train_model`` unchanged) after:

- ``wandb`` and ``mp_api.client``, which the script (and ``mattersim.utils.atoms_utils``)
  import at module level but use only with ``--wandb`` or a Materials Project query, are
  registered as modules that raise on use when they are not installed (the service's
  environment leaves them out; see pyproject.toml);
- ``Potential.from_checkpoint`` sets ``requires_grad=False`` on the M3Gnet parameters
  whose name starts with a prefix of ``$UMLIP_MATTERSIM_FREEZE`` (JSON list);
- ``Potential.train_one_epoch`` appends its return value, the trainer's own epoch
  metrics (loss, MAE energy eV/atom, forces eV/Å, stress GPa), and its wall time as a
  JSON line to ``$UMLIP_MATTERSIM_METRICS`` (rank 0). The script's log line prints the
  same numbers rounded to 4 decimals.

Torch intra-op threads follow ``$OMP_NUM_THREADS``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import runpy
import sys
import time
import types
from typing import Any

#: The fine-tune script shipped in the mattersim wheel.
SCRIPT_MODULE = "mattersim.training.finetune_mattersim"
FREEZE_ENV = "UMLIP_MATTERSIM_FREEZE"
METRICS_ENV = "UMLIP_MATTERSIM_METRICS"


class _Absent(types.ModuleType):
    """A module that is not installed: importing works, using any name raises."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"{self.__name__}.{name} was used, but {self.__name__} is not installed in the "
            "MatterSim service environment (umlip's fine-tuning does not use it)"
        )


class _NoMPRester:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("mp-api is not installed in the MatterSim service environment")


def register_absent_optional_modules() -> list[str]:
    """Registers ``wandb`` and ``mp_api.client`` as raising modules where not installed.

    Returns:
        The module names registered (empty where both are installed).
    """
    registered = []
    if importlib.util.find_spec("wandb") is None:
        sys.modules["wandb"] = _Absent("wandb")
        registered.append("wandb")
    if importlib.util.find_spec("mp_api") is None:
        package = _Absent("mp_api")
        client = _Absent("mp_api.client")
        client.MPRester = _NoMPRester  # type: ignore[attr-defined]
        package.client = client  # type: ignore[attr-defined]
        sys.modules.update({"mp_api": package, "mp_api.client": client})
        registered.append("mp_api.client")
    return registered


def freeze_parameters(model: Any, prefixes: list[str]) -> list[str]:
    """Sets ``requires_grad=False`` on parameters whose name starts with a prefix.

    Args:
        model: the M3Gnet module (parameter names as in the checkpoint's ``model``).
        prefixes: parameter-name prefixes.

    Returns:
        The names of the frozen parameters.
    """
    frozen = []
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen


def install_hooks(freeze: list[str], metrics_path: str | None) -> None:
    """Wraps ``Potential.from_checkpoint`` (freezing) and ``train_one_epoch`` (metrics)."""
    from mattersim.forcefield.potential import Potential

    load = Potential.from_checkpoint.__func__  # type: ignore[attr-defined]

    @functools.wraps(load)
    def from_checkpoint(cls: type, *args: Any, **kwargs: Any) -> Any:
        potential = load(cls, *args, **kwargs)
        if freeze:
            frozen = freeze_parameters(potential.model, freeze)
            print(f"umlip: froze {len(frozen)} parameter tensors ({freeze})", flush=True)
        return potential

    Potential.from_checkpoint = classmethod(from_checkpoint)  # type: ignore[method-assign]
    if metrics_path is None:
        return
    one_epoch = Potential.train_one_epoch

    @functools.wraps(one_epoch)
    def train_one_epoch(self: Any, dataloader: Any, epoch: int, *args: Any, **kwargs: Any):
        start = time.perf_counter()
        metric = one_epoch(self, dataloader, epoch, *args, **kwargs)
        if self.rank in (None, 0):
            loss, mae_e, mae_f, mae_s = (float(v) for v in metric)
            record = {
                "epoch": int(epoch),
                "mode": kwargs.get("mode", "train"),
                "loss": loss,
                "mae_energy_ev_per_atom": mae_e,
                "mae_forces_ev_per_a": mae_f,
                "mae_stress_gpa": mae_s,
                "seconds": time.perf_counter() - start,
            }
            with open(metrics_path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
        return metric

    Potential.train_one_epoch = train_one_epoch  # type: ignore[method-assign]


def main() -> None:
    """Sets threads, installs the hooks and runs the script with this process's argv."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    register_absent_optional_modules()
    install_hooks(json.loads(os.environ.get(FREEZE_ENV, "[]")), os.environ.get(METRICS_ENV))
    sys.argv[0] = SCRIPT_MODULE
    runpy.run_module(SCRIPT_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
