"""Entrypoint: ``python -m umlip_hienet`` serves HIENet with settings from ``UMLIP_*``."""

import sys

from umlip_hienet.potential import HIENetPotential
from umlip_serve import serve


def main() -> int:
    """Serves HIENet until SIGTERM; returns the exit code."""
    return serve(HIENetPotential)


if __name__ == "__main__":
    sys.exit(main())
