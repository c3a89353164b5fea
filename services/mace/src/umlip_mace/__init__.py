"""The MACE potential service: mace-torch's models behind the umlip harness.

``UMLIP_CHECKPOINT`` names a MACE-MP foundation model ("medium-mpa-0" by default, as
``mace_mp()``) or a local model file; see :mod:`umlip_mace.checkpoint`.
"""

from umlip_mace.potential import MACEPotential

__all__ = ["MACEPotential"]
