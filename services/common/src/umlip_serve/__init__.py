"""umlip_serve: the torch-free harness that turns a Potential adapter into a gRPC service.

An adapter subclasses :class:`Potential` (``load()`` + ``calculate()``) and its
entrypoint calls :func:`serve`. See ``services/emt`` for the template.
"""

from umlip_serve.ase_bridge import atoms_to_batch, batch_to_atoms
from umlip_serve.batch import (
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
from umlip_serve.errors import (
    CalculatorSetupError,
    InvalidRequestError,
    ModelNotLoadedError,
    ResourceExhaustedError,
    StructureFailure,
    UmlipError,
)
from umlip_serve.potential import ModelInfo, Potential, file_sha256, package_versions
from umlip_serve.server import create_server, serve
from umlip_serve.settings import Settings

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
