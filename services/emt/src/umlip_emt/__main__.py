"""Entrypoint: ``python -m umlip_emt`` serves EMT with settings from ``UMLIP_*``."""

import sys

from umlip_emt.potential import EMTPotential
from umlip_serve import serve


def main() -> int:
    """Serves EMT until SIGTERM; returns the exit code."""
    return serve(EMTPotential)


if __name__ == "__main__":
    sys.exit(main())
