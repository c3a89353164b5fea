"""CHGNet (pretrained 0.3.0 by default) served by the umlip harness.

The adapter (``potential.py``) builds one CHGNet crystal graph per structure and runs
the whole batch through the model in one forward pass; ``__main__.py`` is the
entrypoint (``python -m umlip_chgnet``).
"""

from umlip_chgnet.potential import CHGNetPotential

__all__ = ["CHGNetPotential"]
