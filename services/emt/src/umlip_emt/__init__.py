"""The reference potential service: ASE's EMT behind the umlip harness.

This package is the template a new potential copies: an adapter (``potential.py``),
an entrypoint (``__main__.py``), its own ``pyproject.toml`` and lock file, a
Dockerfile, and tests that run the harness's conformance kit against a real server.
"""

from umlip_emt.potential import EMTPotential

__all__ = ["EMTPotential"]
