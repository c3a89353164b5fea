"""umlip_serve: the torch-free harness that turns a Potential adapter into a gRPC service.

An adapter subclasses :class:`Potential` (``load()`` + ``calculate()``) and its
entrypoint calls :func:`serve`. See ``services/emt`` for the template. The batch, error
and helper names below that come from :mod:`umlip_wire` (shared with the orchestrator)
are re-exported here, so adapters import everything from ``umlip_serve``.
"""

from umlip_serve.potential import ModelInfo, Potential, package_versions
from umlip_serve.server import create_server, serve
from umlip_serve.settings import Settings
from umlip_wire.ase_bridge import atoms_to_batch, batch_to_atoms
from umlip_wire.batch import (
    ALL_PROPERTIES,
    GPA_PER_EV_PER_A3,
    Property,
    StructureBatch,
    StructureError,
    StructureErrorCode,
    StructureOutput,
    StructureResult,
    chunk_by_budget,
    fill_missing,
)
from umlip_wire.digest import file_sha256
from umlip_wire.errors import (
    CalculatorSetupError,
    InvalidRequestError,
    ModelNotLoadedError,
    ResourceExhaustedError,
    StructureFailure,
    UmlipError,
)

__all__ = [
    "ALL_PROPERTIES",
    "GPA_PER_EV_PER_A3",
    "CalculatorSetupError",
    "InvalidRequestError",
    "ModelInfo",
    "ModelNotLoadedError",
    "Potential",
    "Property",
    "ResourceExhaustedError",
    "Settings",
    "StructureBatch",
    "StructureError",
    "StructureErrorCode",
    "StructureFailure",
    "StructureOutput",
    "StructureResult",
    "UmlipError",
    "atoms_to_batch",
    "batch_to_atoms",
    "chunk_by_budget",
    "create_server",
    "file_sha256",
    "fill_missing",
    "package_versions",
    "serve",
]
