"""Entrypoint: ``python -m umlip_mace`` serves MACE with settings from ``UMLIP_*``."""

import sys

from umlip_mace.potential import MACEPotential
from umlip_serve import serve


def main() -> int:
    """Serves MACE until SIGTERM; returns the exit code."""
    return serve(MACEPotential)


if __name__ == "__main__":
    sys.exit(main())
