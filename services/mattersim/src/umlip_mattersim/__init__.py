"""The MatterSim potential service: mattersim's M3GNet models behind the umlip harness.

``UMLIP_CHECKPOINT`` names a pretrained model ("MatterSim-v1.0.0-1M" by default, as
``Potential.from_checkpoint()``) or a local checkpoint file; see
:mod:`umlip_mattersim.checkpoint`.
"""

from umlip_mattersim.potential import MatterSimPotential

__all__ = ["MatterSimPotential"]
