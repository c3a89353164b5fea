"""Entrypoint: ``python -m umlip_sevennet`` serves SevenNet with settings from ``UMLIP_*``."""

import sys

from umlip_serve import serve
from umlip_sevennet.potential import SevenNetPotential


def main() -> int:
    """Serves SevenNet until SIGTERM; returns the exit code."""
    return serve(SevenNetPotential)


if __name__ == "__main__":
    sys.exit(main())
