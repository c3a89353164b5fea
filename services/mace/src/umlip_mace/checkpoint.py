"""Which MACE checkpoint file ``UMLIP_CHECKPOINT`` names, downloading it if need be.

A value is either a MACE-MP foundation model name that mace-torch's ``mace_mp(model=...)``
accepts ("medium-mpa-0", "medium", "small-0b3"...) or a path to a model file written by
``mace_run_train`` (a pickled ``torch.nn.Module``). Names are resolved by mace-torch's
own ``download_mace_mp_checkpoint``: the cached copy under ``$XDG_CACHE_HOME/mace``
(default ``~/.cache/mace``) when present, otherwise a download into that cache.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import mace  # noqa: F401  (first: it lets e3nn 0.4.4 torch.load its constants)
from mace.calculators import foundations_models
from mace.tools.utils import get_cache_dir

from umlip_serve import CalculatorSetupError

#: mace-torch's default foundation model (what ``mace_mp()`` loads without arguments).
DEFAULT_MODEL = "medium-mpa-0"
#: Seconds a download may wait to connect or for the next block (mace-torch uses 120).
DOWNLOAD_TIMEOUT_S = 30.0


def foundation_names() -> list[str]:
    """The MACE-MP foundation model names mace-torch knows."""
    return sorted(foundations_models.mace_mp_urls)


def resolve_checkpoint(spec: str) -> tuple[str, Path]:
    """The checkpoint's name and local file for a ``UMLIP_CHECKPOINT`` value.

    Args:
        spec: a foundation model name, a local file path, or "" for :data:`DEFAULT_MODEL`.

    Returns:
        (checkpoint name, path of the weights file).

    Raises:
        CalculatorSetupError: unknown name and no such file, or the download failed.
    """
    name = spec or DEFAULT_MODEL
    if name in foundations_models.mace_mp_urls:
        return name, _cached_or_downloaded(name)
    path = Path(name).expanduser()
    if path.is_file():
        return path.name, path.resolve()
    raise CalculatorSetupError(
        f"UMLIP_CHECKPOINT={spec!r} is neither a MACE-MP foundation model name "
        f"({', '.join(foundation_names())}) nor an existing checkpoint file"
    )


def default_head(heads: list[str]) -> str:
    """The head of a (multi-head) model that MACECalculator uses without ``head=``."""
    if len(heads) == 1:
        return heads[0]
    defaults = [head for head in heads if head.lower() == "default"]
    if not defaults:
        raise CalculatorSetupError(f"multi-head MACE model without a default head: {heads}")
    return defaults[0]


def _cached_or_downloaded(name: str) -> Path:
    url = foundations_models.mace_mp_urls[name]
    try:
        with _download_timeout(DOWNLOAD_TIMEOUT_S):
            return Path(foundations_models.download_mace_mp_checkpoint(name))
    except Exception as error:  # urllib, socket and OS errors alike
        raise CalculatorSetupError(
            f"MACE foundation model {name!r} is not in the cache {get_cache_dir()} and "
            f"could not be downloaded from {url} ({type(error).__name__}: {error}); "
            "download it there on a machine with network access, or set "
            "UMLIP_CHECKPOINT to a local checkpoint file"
        ) from error


@contextlib.contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    """Shortens mace-torch's per-read download timeout (a dead network fails fast)."""
    original = getattr(foundations_models, "_urlretrieve_with_timeout", None)
    if original is None:  # a mace-torch without the helper: keep its own behaviour
        yield
        return
    foundations_models._urlretrieve_with_timeout = functools.partial(original, timeout=seconds)
    try:
        yield
    finally:
        foundations_models._urlretrieve_with_timeout = original
