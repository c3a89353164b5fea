"""Entrypoint: ``python -m umlip_mattersim`` serves MatterSim with ``UMLIP_*`` settings."""

import sys

from umlip_mattersim.potential import MatterSimPotential
from umlip_serve import serve


def main() -> int:
    """Serves MatterSim until SIGTERM; returns the exit code."""
    return serve(MatterSimPotential)


if __name__ == "__main__":
    sys.exit(main())
