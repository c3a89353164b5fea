"""Which SevenNet checkpoint ``UMLIP_CHECKPOINT`` names.

A value is ``NAME[@MODAL]`` with NAME a sevenn pretrained name (``7net-0``, the default,
is SevenNet-0 11Jul2024; ``7net-0_22May2024``, ``7net-l3i5`` and ``7net-mf-0`` are also
in the wheel; others are downloaded by sevenn, which fails fast offline) and MODAL the
fidelity of a multi-fidelity model (``7net-mf-0@PBE``), or a path to a checkpoint file.
"""

from __future__ import annotations

from pathlib import Path

from sevenn import util

from umlip_serve import CalculatorSetupError

#: The pretrained checkpoint served when ``UMLIP_CHECKPOINT`` is empty (SevenNet-0 11Jul2024).
DEFAULT_CHECKPOINT = "7net-0"


def resolve_checkpoint(checkpoint: str) -> tuple[str, Path, str | None]:
    """(checkpoint name, weights file, modal or None) for a ``UMLIP_CHECKPOINT`` value.

    Raises:
        CalculatorSetupError: unknown name, missing file or failed download.
    """
    name, modal = checkpoint, None
    if not Path(checkpoint).is_file() and "@" in checkpoint:
        name, modal = checkpoint.rsplit("@", 1)
    if Path(name).is_file():
        return Path(name).name, Path(name).resolve(), modal
    try:
        path = Path(util.pretrained_name_to_path(name))
    except (OSError, ValueError) as error:
        known = ", ".join(util.get_available_pretrained_models())
        raise CalculatorSetupError(
            f"cannot find SevenNet checkpoint {name!r} ({error}); known names: {known}"
        ) from error
    return f"{name} ({path.parent.name})", path, modal
