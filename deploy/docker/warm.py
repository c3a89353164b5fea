"""Build-time model warm-up: loads a service's model once, so its weights are in the image.

A service's ``load()`` fetches what ``UMLIP_CHECKPOINT`` names into the model's own cache
(MACE-MP models under ``~/.cache/mace``, MatterSim under ``~/.local/mattersim``); running
it during ``docker build`` (as the image's user) bakes that cache into a layer, and the
service then starts without network access.

Usage: UMLIP_CHECKPOINT=NAME python warm.py MODULE   (e.g. umlip_mace)
"""

from __future__ import annotations

import importlib
import inspect
import sys

from umlip_serve import Potential, Settings


def potential_class(module_name: str) -> type[Potential]:
    """The :class:`Potential` subclass a service package exports."""
    module = importlib.import_module(module_name)
    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Potential) and value is not Potential
    ]
    if len(found) != 1:
        raise SystemExit(f"{module_name} exports {len(found)} Potential classes, expected one")
    return found[0]


def main(argv: list[str]) -> int:
    """Loads the model; prints what was loaded."""
    if len(argv) != 1:
        raise SystemExit(__doc__)
    cls = potential_class(argv[0])
    info = cls(Settings.from_env()).load()
    print(f"{cls.name}: {info.checkpoint_name} sha256={info.checkpoint_sha256 or '-'} cached")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
