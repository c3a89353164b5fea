"""umlip orchestrator: elastic benchmarks of remote interatomic potentials over gRPC.

Imports no torch and no model package: every potential is reached through the
``umlip.potential.v1`` protocol.
"""

__version__ = "0.1.0"
