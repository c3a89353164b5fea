"""Which MatterSim checkpoint file ``UMLIP_CHECKPOINT`` names, downloading it if need be.

A value is either a pretrained model name that ``Potential.from_checkpoint`` accepts
("MatterSim-v1.0.0-1M", "MatterSim-v1.0.0-5M", case-insensitive, ".pth" optional) or a
path to a checkpoint written by ``Potential.save``. Names live where mattersim caches
them, ``~/.local/mattersim/pretrained_models/``; a missing one is fetched with
mattersim's own ``download_checkpoint``, under a network timeout (mattersim sets none).
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from pathlib import Path

import requests
from mattersim.utils import download_utils

from umlip_serve import CalculatorSetupError

#: Pretrained model names (lower case, no suffix) -> file names in mattersim's cache.
PRETRAINED = {
    "mattersim-v1.0.0-1m": "mattersim-v1.0.0-1M.pth",
    "mattersim-v1.0.0-5m": "mattersim-v1.0.0-5M.pth",
}
#: mattersim's default model (what ``Potential.from_checkpoint()`` loads).
DEFAULT_MODEL = "MatterSim-v1.0.0-1M"
#: Seconds a download may wait to connect and between received bytes.
DOWNLOAD_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """mattersim's folder of pretrained models (follows ``$HOME``)."""
    return Path("~/.local/mattersim/pretrained_models").expanduser()


def resolve_checkpoint(spec: str) -> tuple[str, Path]:
    """The checkpoint's name and local file for a ``UMLIP_CHECKPOINT`` value.

    Args:
        spec: a pretrained model name, a local file path, or "" for :data:`DEFAULT_MODEL`.

    Returns:
        (checkpoint name, path of the weights file).

    Raises:
        CalculatorSetupError: unknown name and no such file, or the download failed.
    """
    name = spec or DEFAULT_MODEL
    key = name.lower().removesuffix(".pth")
    if key in PRETRAINED:
        return name, _cached_or_downloaded(PRETRAINED[key])
    path = Path(name).expanduser()
    if path.is_file():
        return path.name, path.resolve()
    raise CalculatorSetupError(
        f"UMLIP_CHECKPOINT={spec!r} is neither a MatterSim pretrained model name "
        f"(MatterSim-v1.0.0-1M, MatterSim-v1.0.0-5M) nor an existing checkpoint file"
    )


def _cached_or_downloaded(file_name: str) -> Path:
    path = cache_dir() / file_name
    if path.is_file():
        return path
    try:
        with _download_timeout(DOWNLOAD_TIMEOUT_S):
            download_utils.download_checkpoint(file_name, save_folder=str(cache_dir()))
    except Exception as error:  # requests, socket and OS errors alike
        raise CalculatorSetupError(
            f"MatterSim checkpoint {file_name} is not in the cache {cache_dir()} and could "
            f"not be downloaded ({type(error).__name__}: {error}); download it there on a "
            "machine with network access, or set UMLIP_CHECKPOINT to a local checkpoint file"
        ) from error
    return path


@contextlib.contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    """Gives mattersim's ``requests.get`` a timeout (a dead network fails fast)."""
    original = download_utils.requests
    download_utils.requests = types.SimpleNamespace(
        get=functools.partial(requests.get, timeout=seconds)
    )
    try:
        yield
    finally:
        download_utils.requests = original
