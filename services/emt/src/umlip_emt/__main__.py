"""Entrypoint: ``python -m umlip_emt`` serves EMT with settings from ``UMLIP_*``."""

import sys

from umlip_serve import serve

from umlip_emt.potential import EMTPotential


def main() -> int:
    """Serves EMT until SIGTERM; returns the exit code."""
    return serve(EMTPotential)


if __name__ == "__main__":
    sys.exit(main())
