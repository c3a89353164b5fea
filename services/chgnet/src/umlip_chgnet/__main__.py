"""Entrypoint: ``python -m umlip_chgnet`` serves CHGNet with settings from ``UMLIP_*``."""

import sys

from umlip_chgnet.potential import CHGNetPotential
from umlip_serve import serve


def main() -> int:
    """Serves CHGNet until SIGTERM; returns the exit code."""
    return serve(CHGNetPotential)


if __name__ == "__main__":
    sys.exit(main())
