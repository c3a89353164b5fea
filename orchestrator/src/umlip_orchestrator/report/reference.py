"""DFT reference values per material and property, and the DFT-stability filter.

A reference comes from one of:

- a dataset file read by :func:`umlip_orchestrator.datasets.load_dataset` (the bundled
  K/G set ``mp-binary-pbe-elasticity-2025.1``, the full-tensor set
  ``deJong2015_mp_elastic_tensor_1181``, or a user file: see ``docs/report.md``);
- the ``reference_k_vrh_gpa``/``reference_g_vrh_gpa`` columns of a results table (the
  default of ``umlip report``), with structures from the run's dataset for the Debye
  temperature when that file can still be read.

Values are derived with :func:`~umlip_orchestrator.elastic.derive_properties` when the
material has a DFT tensor (the tensor wins over listed K and G), otherwise with
:func:`~umlip_orchestrator.elastic.derived_from_moduli` from K and G. What a reference
cannot give is NaN (anisotropy and Cauchy pressure without a tensor, the Debye
temperature without a structure).

Filter (SCIENCE.md §4, the reference set is the DFT-stable materials): a material with
a tensor is kept when the tensor is Born-stable; one with K and G only when K > 0 and
G > 0; one with neither is dropped as having no reference values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from numpy.typing import NDArray

from umlip_orchestrator.datasets import DatasetError, dataset_sha256, load_dataset
from umlip_orchestrator.elastic import derive_properties, derived_from_moduli
from umlip_orchestrator.package_data import BUNDLED_SAMPLE
from umlip_orchestrator.report.errors import ReportError

NAN = math.nan


@dataclass(frozen=True, kw_only=True)
class ReferenceRow:
    """DFT reference values of one material (NaN where the reference cannot give them).

    Attributes:
        material_id: Material id (the join key with the results table).
        formula: Reduced formula.
        source: ``"tensor"`` (derived from a DFT tensor), ``"moduli"`` (from K and G)
            or ``"none"`` (no reference values).
        dft_stable: Born stability of the DFT tensor; None without a tensor.
        included: Whether the material passes the DFT-stability filter.
        exclusion: Why it does not; None when included.
        k_vrh_gpa: K_VRH, GPa.
        g_vrh_gpa: G_VRH, GPa.
        youngs_modulus_gpa: E from K and G, GPa.
        poisson_ratio: nu from K and G.
        pugh_ratio: K/G.
        universal_anisotropy: A_U (tensor only).
        cauchy_pressure_gpa: C12 - C44, GPa (tensor only).
        debye_temperature_k: Debye temperature, K (needs the DFT structure).
    """

    material_id: str
    formula: str
    source: str
    dft_stable: bool | None
    included: bool
    exclusion: str | None
    k_vrh_gpa: float
    g_vrh_gpa: float
    youngs_modulus_gpa: float
    poisson_ratio: float
    pugh_ratio: float
    universal_anisotropy: float
    cauchy_pressure_gpa: float
    debye_temperature_k: float


@dataclass(frozen=True)
class ReferenceSet:
    """The reference rows of one or more sources (first source wins for a material).

    Attributes:
        name: What it is, e.g. the file name(s) or ``"results table"``.
        rows: One row per material, in input order.
        n_problems: Entries or files of the source(s) that could not be read.
        notes: Remarks for the report (e.g. why the Debye temperature is missing).
        tensors: The DFT elastic tensors by material id, Voigt 6x6 row-major, GPa (for
            the material pages).
    """

    name: str
    rows: tuple[ReferenceRow, ...]
    n_problems: int = 0
    notes: tuple[str, ...] = ()
    tensors: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def by_id(self) -> dict[str, ReferenceRow]:
        """The rows keyed by material id."""
        return {row.material_id: row for row in self.rows}

    @property
    def has_stability(self) -> bool:
        """Whether any material has a DFT stability call (a tensor)."""
        return any(row.dft_stable is not None for row in self.rows)


def _finite(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else NAN


_DERIVED = (
    "youngs_modulus_gpa",
    "poisson_ratio",
    "pugh_ratio",
    "universal_anisotropy",
    "cauchy_pressure_gpa",
    "debye_temperature_k",
)


def reference_row(
    material_id: str,
    formula: str,
    *,
    k_gpa: float | None = None,
    g_gpa: float | None = None,
    tensor_gpa: NDArray[np.float64] | None = None,
    atoms: Atoms | None = None,
) -> ReferenceRow:
    """The reference values of one material, with the DFT-stability filter applied.

    Args:
        material_id: Material id.
        formula: Reduced formula.
        k_gpa: DFT K_VRH, GPa (ignored when a tensor is given).
        g_gpa: DFT G_VRH, GPa (ignored when a tensor is given).
        tensor_gpa: (6, 6) DFT elastic tensor, Voigt order, GPa.
        atoms: DFT structure, for the Debye temperature.
    """
    common = {"material_id": material_id, "formula": formula}
    if tensor_gpa is not None:
        props = derive_properties(tensor_gpa, atoms)
        stable = props.born_stable
        return ReferenceRow(
            **common,
            source="tensor",
            dft_stable=stable,
            included=stable,
            exclusion=None
            if stable
            else f"DFT tensor not Born-stable (min eigenvalue {props.min_eigenvalue:.3g} GPa)",
            k_vrh_gpa=props.k_vrh,
            g_vrh_gpa=props.g_vrh,
            youngs_modulus_gpa=props.youngs_modulus,
            poisson_ratio=props.poisson_ratio,
            pugh_ratio=props.pugh_ratio,
            universal_anisotropy=props.universal_anisotropy,
            cauchy_pressure_gpa=props.cauchy_pressure,
            debye_temperature_k=_finite(props.debye_temperature),
        )
    k, g = _finite(k_gpa), _finite(g_gpa)
    if math.isnan(k) or math.isnan(g):
        return ReferenceRow(
            **common,
            source="none",
            dft_stable=None,
            included=False,
            exclusion="no DFT tensor and no finite DFT K and G",
            k_vrh_gpa=k,
            g_vrh_gpa=g,
            **dict.fromkeys(_DERIVED, NAN),
        )
    moduli = derived_from_moduli(k, g, atoms)
    positive = k > 0.0 and g > 0.0
    return ReferenceRow(
        **common,
        source="moduli",
        dft_stable=None,
        included=positive,
        exclusion=None if positive else f"DFT K or G not positive (K={k:.3g}, G={g:.3g} GPa)",
        k_vrh_gpa=k,
        g_vrh_gpa=g,
        youngs_modulus_gpa=moduli.youngs_modulus,
        poisson_ratio=moduli.poisson_ratio,
        pugh_ratio=moduli.pugh_ratio,
        universal_anisotropy=NAN,
        cauchy_pressure_gpa=NAN,
        debye_temperature_k=_finite(moduli.debye_temperature),
    )


def load_reference(path: Path) -> ReferenceSet:
    """Reads a reference dataset (JSON list or structure file, see ``docs/report.md``).

    Raises:
        ReportError: The path is missing or unreadable, no material could be read, or
            no material has reference values (neither a tensor nor K and G).
    """
    path = Path(path)
    try:
        materials, problems = load_dataset(path)
    except (DatasetError, OSError) as error:
        raise ReportError(f"unreadable reference {path}: {error}") from None
    if not materials:
        first = f" ({problems[0].source}: {problems[0].message})" if problems else ""
        raise ReportError(f"unreadable reference {path}: no material could be read{first}")
    rows = tuple(
        reference_row(
            m.material_id,
            m.formula,
            k_gpa=m.reference_k_vrh_gpa,
            g_gpa=m.reference_g_vrh_gpa,
            tensor_gpa=m.reference_tensor_gpa,
            atoms=m.atoms,
        )
        for m in materials
    )
    if all(row.source == "none" for row in rows):
        raise ReportError(
            f"reference {path} has no reference values (no elastic tensor, no K and G)"
        )
    tensors = {
        m.material_id: tuple(float(v) for v in np.asarray(m.reference_tensor_gpa).ravel())
        for m in materials
        if m.reference_tensor_gpa is not None
    }
    return ReferenceSet(name=path.name, rows=rows, n_problems=len(problems), tensors=tensors)


def merge_references(sets: Sequence[ReferenceSet]) -> ReferenceSet:
    """One set from several; a material takes its row from the first set that has it."""
    if len(sets) == 1:
        return sets[0]
    rows: dict[str, ReferenceRow] = {}
    for reference in sets:
        for row in reference.rows:
            rows.setdefault(row.material_id, row)
    tensors: dict[str, tuple[float, ...]] = {}
    for reference in sets:
        for material_id, tensor in reference.tensors.items():
            tensors.setdefault(material_id, tensor)
    return ReferenceSet(
        name=" + ".join(s.name for s in sets),
        rows=tuple(rows.values()),
        n_problems=sum(s.n_problems for s in sets),
        notes=tuple(n for s in sets for n in s.notes),
        tensors=tensors,
    )


def reference_from_results(
    rows: Iterable[Mapping[str, object]],
    structures: Mapping[str, Atoms] | None = None,
    notes: Sequence[str] = (),
) -> ReferenceSet:
    """The reference K and G stored in results rows, and what derives from them.

    Args:
        rows: Results rows with ``material_id``, ``formula``, ``reference_k_vrh_gpa`` and
            ``reference_g_vrh_gpa`` (one material may have a row per model; the first
            row with both values wins).
        structures: DFT structures by material id, for the Debye temperature.
        notes: Remarks carried into the report.
    """
    structures = structures or {}
    chosen: dict[str, tuple[str, float | None, float | None]] = {}
    for row in rows:
        material_id = str(row["material_id"])
        k, g = row.get("reference_k_vrh_gpa"), row.get("reference_g_vrh_gpa")
        have = chosen.get(material_id)
        complete = k is not None and g is not None
        if have is None or (complete and (have[1] is None or have[2] is None)):
            chosen[material_id] = (str(row["formula"]), k, g)  # type: ignore[arg-type]
    reference_rows = tuple(
        reference_row(mid, formula, k_gpa=k, g_gpa=g, atoms=structures.get(mid))
        for mid, (formula, k, g) in chosen.items()
    )
    return ReferenceSet(
        name="results table (reference K, G)", rows=reference_rows, notes=tuple(notes)
    )


def structures_from_manifest(
    results_dir: Path, material_ids: set[str]
) -> tuple[dict[str, Atoms], list[str]]:
    """The input structures of a run, read from the dataset(s) its manifest names.

    Only the Debye temperature of the default (results-table) reference needs them.

    Returns:
        Structures by material id (those in ``material_ids`` found), and notes on
        datasets that could not be read.
    """
    manifest = Path(results_dir) / "manifest.json"
    try:
        runs = json.loads(manifest.read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError, AttributeError):
        return {}, ["no readable manifest.json: the DFT Debye temperature needs --reference"]
    found: dict[str, Atoms] = {}
    notes: list[str] = []
    datasets = dict.fromkeys(
        (str(r["dataset"]), str(r.get("dataset_sha256") or ""))
        for r in runs
        if isinstance(r, dict) and r.get("dataset")
    )
    for text, digest in datasets:
        path = Path(text)
        if not path.is_absolute() and not path.exists():
            path = Path(results_dir) / path
        try:
            if not path.exists() and digest and digest == dataset_sha256(BUNDLED_SAMPLE):
                path = BUNDLED_SAMPLE  # e.g. run in a container: the same sample here
            elif digest and path.exists() and dataset_sha256(path) != digest:
                notes.append(
                    f"run dataset {text} changed since the run (sha256 {digest[:12]} then): "
                    "no DFT Debye temperature from it"
                )
                continue
            materials, _ = load_dataset(path)
        except (DatasetError, OSError) as error:
            notes.append(f"run dataset {text} unreadable ({error}): no DFT Debye temperature")
            continue
        for m in materials:
            if m.material_id in material_ids:
                found.setdefault(m.material_id, m.atoms)
    if not datasets:
        notes.append("manifest names no dataset: the DFT Debye temperature needs --reference")
    return found, notes
