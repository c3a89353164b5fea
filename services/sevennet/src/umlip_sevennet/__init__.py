"""SevenNet (SevenNet-0 11Jul2024, ``7net-0``, by default) served by the umlip harness.

The adapter (``potential.py``) builds one SevenNet graph per structure and runs the
batch through the model in batch mode (a torch_geometric ``Batch``);
``__main__.py`` is the entrypoint (``python -m umlip_sevennet``).
"""

from umlip_sevennet.potential import SevenNetPotential

__all__ = ["SevenNetPotential"]
