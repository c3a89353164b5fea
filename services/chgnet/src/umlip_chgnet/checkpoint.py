"""Which CHGNet checkpoint ``UMLIP_CHECKPOINT`` names.

A value is a pretrained name shipped in the chgnet wheel ("0.3.0", the default;
"0.2.0"; "r2scan"), one folder of ``chgnet/pretrained/`` each, or a path to a checkpoint
file written by chgnet's trainer (``CHGNet.from_file``). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import chgnet

from umlip_serve import CalculatorSetupError

#: The pretrained checkpoint served when ``UMLIP_CHECKPOINT`` is empty.
DEFAULT_CHECKPOINT = "0.3.0"
#: Pretrained checkpoints shipped in the chgnet wheel, one folder per name.
PRETRAINED_DIR = Path(chgnet.__file__).parent / "pretrained"


def resolve_checkpoint(checkpoint: str) -> tuple[str, Path, bool]:
    """(checkpoint name, weights file, is pretrained) for a shipped name or a file path.

    Raises:
        CalculatorSetupError: neither a shipped pretrained name nor an existing file.
    """
    if Path(checkpoint).is_file():
        return Path(checkpoint).name, Path(checkpoint).resolve(), False
    names = sorted(p.name for p in PRETRAINED_DIR.iterdir() if p.is_dir())
    files = sorted((PRETRAINED_DIR / checkpoint).glob("*.pth.tar")) if checkpoint in names else []
    if len(files) != 1:
        raise CalculatorSetupError(
            f"unknown CHGNet checkpoint {checkpoint!r}: give one of {names} or a file path"
        )
    return checkpoint, files[0], True
