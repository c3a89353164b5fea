"""The base class every model adapter implements: ``load()`` and ``calculate()``.

An adapter is a small class (target: under ~150 lines) living in its model's own
environment. The harness owns transport, validation, batching, health, errors and
limits; the adapter only converts a :class:`StructureBatch` into its library's input,
runs the model and converts the outputs to the wire units and signs:
energy eV, forces eV/Å, stress eV/Å^3 Voigt xx yy zz yz xz xy, ASE sign (tensile > 0).
"""

from __future__ import annotations

import abc
import hashlib
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import ClassVar

from umlip_serve.batch import ALL_PROPERTIES, Property, StructureBatch, StructureResult
from umlip_serve.settings import Settings


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What :meth:`Potential.load` reports about the loaded model.

    Attributes:
        model_version: version of the model package (e.g. chgnet's).
        checkpoint_name: checkpoint identity (e.g. "0.3.0", a file name).
        checkpoint_sha256: sha256 of the checkpoint file, "" for analytic potentials.
        supported_atomic_numbers: elements the model handles; others fail in-band.
        cutoff: interaction cutoff, Å (0 if unknown).
        package_versions: versions of the packages that matter (torch, e3nn, ...).
        dtype: precision the model actually runs in ("float32"/"float64"); None means
            ``settings.dtype`` was honoured.
        device: device the model actually runs on (e.g. "cuda:0"); None means
            ``settings.device``.
        model_name: name reported to clients; None means the class's ``name``. The
            harness sets it for a fine-tuned checkpoint (``<name>-ft-<sha8>``).
        provenance: where a fine-tuned checkpoint came from (set by the harness from
            its record; see :mod:`umlip_serve.finetune`); empty otherwise.
    """

    model_version: str
    checkpoint_name: str
    checkpoint_sha256: str = ""
    supported_atomic_numbers: frozenset[int]
    cutoff: float = 0.0
    package_versions: dict[str, str] = field(default_factory=dict)
    dtype: str | None = None
    device: str | None = None
    model_name: str | None = None
    provenance: dict[str, str] = field(default_factory=dict)


class Potential(abc.ABC):
    """A potential served by the harness.

    Subclasses set :attr:`name` and :attr:`implemented_properties` and implement
    :meth:`load` and :meth:`calculate`. The harness calls ``load()`` once, then
    ``calculate()`` from a single thread (calls never overlap), with batches that it has
    already validated: finite numbers, non-singular periodic cells, no overlapping atoms
    and only supported elements.
    """

    #: Model family name reported to clients, e.g. "chgnet".
    name: ClassVar[str]
    #: Properties :meth:`calculate` can return.
    implemented_properties: ClassVar[tuple[Property, ...]] = ALL_PROPERTIES
    #: The model needs every structure periodic in all three directions, whatever is
    #: asked (the harness fails other structures in-band before the model sees them).
    #: Stress needs it for every model; the harness enforces that too.
    requires_full_periodicity: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def load(self) -> ModelInfo:
        """Loads the model (checkpoint from ``settings.checkpoint``) onto ``settings.device``.

        Raises:
            CalculatorSetupError: the checkpoint cannot be found, downloaded or read.
        """

    @abc.abstractmethod
    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        """Computes ``properties`` for every structure of ``batch``.

        Args:
            batch: validated structures; arrays are read-only.
            properties: what to compute (a subset of ``implemented_properties``).

        Returns:
            One :class:`StructureOutput` or :class:`StructureError` per structure, in
            batch order (fill a ``[None] * n`` list and return ``fill_missing(results)``;
            never drop entries). Raise only for failures of the whole batch (e.g. out of
            memory). The harness checks the count (a wrong one fails the request),
            drops properties not requested and turns missing, misshapen or non-finite
            values into in-band errors.
        """


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the checkpoint identity reported in GetModelInfo)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` plus Python's ("absent" for missing packages)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
