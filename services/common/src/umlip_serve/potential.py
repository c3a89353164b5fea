"""The base class every model adapter implements: ``load()`` and ``calculate()``.

An adapter is a small class (target: under ~150 lines) living in its model's own
environment. The harness owns transport, validation, batching, health, errors and
limits; the adapter only converts a :class:`StructureBatch` into its library's input,
runs the model and converts the outputs to the wire units and signs:
energy eV, forces eV/Å, stress eV/Å^3 Voigt xx yy zz yz xz xy, ASE sign (tensile > 0).
"""

from __future__ import annotations

import abc
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import ClassVar

from umlip_serve.checkpoint_scan import (
    TENSOR_CHECKPOINT_GLOBALS,
    checkpoint_globals,
    disallowed_globals,
)
from umlip_serve.settings import Settings
from umlip_wire.batch import ALL_PROPERTIES, Property, StructureBatch, StructureResult
from umlip_wire.digest import file_sha256
from umlip_wire.errors import CalculatorSetupError


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
    #: Precisions the model runs in, preferred first. The harness runs it in
    #: ``UMLIP_DTYPE`` if set (refusing to start on one not listed), else in the first.
    supported_dtypes: ClassVar[tuple[str, ...]] = ("float64", "float32")
    #: Most atoms one forward pass may hold (e.g. a model whose memory per pass is
    #: bounded); None: only ``UMLIP_MAX_BATCH_ATOMS`` bounds it. The harness serves the
    #: smaller of the two, reports it in GetModelInfo and splits merged calls by it.
    max_atoms_per_pass: ClassVar[int | None] = None
    #: Globals a checkpoint file of this model may import when unpickled: exact
    #: ``module.name`` entries, or prefixes ending in ".". The harness scans a checkpoint
    #: file before the adapter loads it (:meth:`check_checkpoint`) and refuses others.
    checkpoint_globals: ClassVar[tuple[str, ...]] = TENSOR_CHECKPOINT_GLOBALS

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

    def check_checkpoint(self, path: str | Path) -> None:
        """Refuses a checkpoint file before it is unpickled, unless it is trusted.

        The harness calls this for a checkpoint file named in the settings; adapters call
        it for a file they resolve themselves (a cached download) before loading it.
        With ``UMLIP_CHECKPOINT_SHA256`` set, the file must have that hash and is then
        trusted as pinned; otherwise every global its pickles would import must be in
        :attr:`checkpoint_globals`.

        Raises:
            CalculatorSetupError: wrong hash, unreadable file, or a global not allowed.
        """
        expected = self.settings.checkpoint_sha256.strip().lower()
        try:
            if expected:
                actual = file_sha256(path)
                if actual != expected:
                    raise CalculatorSetupError(
                        f"checkpoint {path} has sha256 {actual} before loading, but "
                        f"UMLIP_CHECKPOINT_SHA256 requires {expected}; refusing to serve it"
                    )
                return
            found = checkpoint_globals(path)
        except OSError as error:
            raise CalculatorSetupError(f"cannot read checkpoint {path}: {error}") from error
        refused = disallowed_globals(found, self.checkpoint_globals)
        if refused:
            shown = ", ".join(refused[:5]) + (
                f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            )
            raise CalculatorSetupError(
                f"checkpoint {path} would import {shown} when unpickled, which a {self.name} "
                "checkpoint never needs; refusing to load it. If you trust this exact file, "
                "pin it with UMLIP_CHECKPOINT_SHA256=<its sha256>"
            )


def resolve_settings(potential_class: type[Potential], settings: Settings) -> Settings:
    """``settings`` with the model's declared capabilities applied.

    The precision becomes the model's preferred one when ``UMLIP_DTYPE`` is unset, and
    the atom budget per model call the smaller of ``UMLIP_MAX_BATCH_ATOMS`` and the
    class's :attr:`Potential.max_atoms_per_pass`.

    Raises:
        CalculatorSetupError: ``UMLIP_DTYPE`` names a precision the model cannot run in.
    """
    supported = potential_class.supported_dtypes
    dtype = settings.dtype or supported[0]
    if dtype not in supported:
        raise CalculatorSetupError(
            f"{potential_class.name} runs in {' or '.join(supported)} only, not "
            f"UMLIP_DTYPE={settings.dtype}; unset it (default {supported[0]}) or set one of those"
        )
    max_atoms = settings.max_batch_atoms
    if potential_class.max_atoms_per_pass is not None:
        max_atoms = min(max_atoms, potential_class.max_atoms_per_pass)
    if (dtype, max_atoms) == (settings.dtype, settings.max_batch_atoms):
        return settings
    return replace(settings, dtype=dtype, max_batch_atoms=max_atoms)


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` plus Python's ("absent" for missing packages)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
