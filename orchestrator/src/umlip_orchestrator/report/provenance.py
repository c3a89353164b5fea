"""How a run's numbers were made, read from its ``manifest.json``.

Every ``umlip run`` into a folder appends an entry to the manifest's ``runs``: the
dataset, the workflow settings (relaxation, strains, ion mode), each service's
``GetModelInfo`` (checkpoint name and sha256, package versions, device, precision) and,
once it ends, its wall time. A report prints these, and refuses to pool the rows of runs
whose settings or checkpoints differ unless told to (then it says so at the top).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from umlip_orchestrator.report.errors import ReportError

#: Workflow keys that change speed, not results: never a reason to refuse pooling.
PERFORMANCE_KEYS = frozenset({"max_active", "requests_in_flight"})
#: Settings shown first, in this order (the rest follow alphabetically).
KEY_SETTINGS = (
    "ion_mode",
    "relax.fmax",
    "relax.max_steps",
    "relax.fix_symmetry",
    "relax.symprec",
    "relax.relax_cell",
    "strains.normal",
    "strains.shear",
    "strains.convention",
    "deformation_relax.fmax",
    "deformation_relax.max_steps",
    "deformation_relax.fix_symmetry",
)


@dataclass(frozen=True)
class ModelProvenance:
    """One model's service as a run recorded it (GetModelInfo)."""

    model: str
    checkpoint_name: str
    checkpoint_sha256: str
    model_version: str
    device: str
    dtype: str
    package_versions: str
    fine_tuned_from: str = ""


@dataclass(frozen=True)
class RunProvenance:
    """One entry of a run folder's manifest."""

    dataset: str
    n_materials: int | None
    started: str
    finished: str | None
    wall_time_s: float | None
    settings: Mapping[str, str]
    models: tuple[ModelProvenance, ...]
    dataset_sha256: str = ""

    @property
    def dataset_label(self) -> str:
        """The dataset's path with the start of its digest, when the run recorded one."""
        if not self.dataset_sha256:
            return self.dataset
        return f"{self.dataset} (sha256 {self.dataset_sha256[:12]})"

    @property
    def dataset_identity(self) -> str:
        """What makes two runs' datasets the same: the digest (the same file read from
        another path, e.g. the bundled sample in a container, is the same dataset), or
        the path for runs that predate the digest."""
        return self.dataset_sha256 or self.dataset


@dataclass(frozen=True)
class Provenance:
    """Every run behind a results table, and what differs between them.

    Attributes:
        runs: The manifest's entries, oldest first (a resumed run adds one).
        differing: Setting (or ``checkpoint of <model>``) -> its distinct values, for
            every one that is not the same in all runs.
        source: Where it was read from (for messages).
    """

    runs: tuple[RunProvenance, ...]
    differing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    @property
    def mixed(self) -> bool:
        """Whether the runs differ in a setting or a checkpoint."""
        return bool(self.differing)

    def setting(self, key: str) -> str:
        """A setting's value in every run ("a | b" where they differ, "?" if unknown)."""
        values = list(dict.fromkeys(run.settings.get(key, "?") for run in self.runs))
        return " | ".join(values) if values else "?"

    def setting_rows(self) -> list[tuple[str, str]]:
        """(name, value) rows of the dataset, timing and workflow settings."""
        rows: list[tuple[str, str]] = []
        if not self.runs:
            return [("manifest", f"none found in {self.source}: settings unknown")]
        datasets = list(dict.fromkeys(run.dataset_label for run in self.runs))
        rows.append(("dataset", " | ".join(datasets)))
        counts = list(dict.fromkeys(str(run.n_materials) for run in self.runs))
        rows.append(("materials in the dataset (as read)", " | ".join(counts)))
        rows.append(("runs into this folder", str(len(self.runs))))
        rows.append(("run started (UTC)", " | ".join(run.started for run in self.runs)))
        walls = [run.wall_time_s for run in self.runs]
        if all(w is not None for w in walls):
            rows.append(("wall time", f"{sum(w for w in walls if w is not None):.1f} s"))
        else:
            rows.append(("wall time", "unknown: a run did not finish (or predates the record)"))
        keys = [k for k in KEY_SETTINGS if any(k in run.settings for run in self.runs)]
        others = sorted({k for run in self.runs for k in run.settings} - set(keys))
        rows += [(key, self.setting(key)) for key in [*keys, *others]]
        return rows

    def model_rows(self) -> list[ModelProvenance]:
        """Each model's service, latest run's record first seen wins per (model, sha)."""
        seen: dict[tuple[str, str], ModelProvenance] = {}
        for run in self.runs:
            for model in run.models:
                seen.setdefault((model.model, model.checkpoint_sha256), model)
        return sorted(seen.values(), key=lambda m: m.model)

    def checkpoint_label(self, model: str) -> str:
        """ "<checkpoint name> (sha256 <12 hex>)" of a model, or "unknown"."""
        labels = [
            f"{m.checkpoint_name} (sha256 {m.checkpoint_sha256[:12]})"
            for m in self.model_rows()
            if m.model == model
        ]
        return " | ".join(labels) if labels else "unknown"

    def summary_line(self) -> str:
        """A short description for a page title: ion mode and fmax."""
        if not self.runs:
            return "settings unknown"
        return f"{self.setting('ion_mode')} ions, fmax {self.setting('relax.fmax')} eV/Å"


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"relax": {"fmax": 0.1}}`` -> ``{"relax.fmax": "0.1"}``; lists as "a, b"."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        elif isinstance(value, float):
            flat[name] = f"{value:g}"
        else:
            flat[name] = str(value)
    return flat


def result_settings(workflow: Mapping[str, Any]) -> dict[str, str]:
    """A run's workflow settings, flattened, without the keys that change only speed."""
    return {
        key: value
        for key, value in flatten(workflow).items()
        if key.split(".")[0] not in PERFORMANCE_KEYS
    }


def _versions(versions: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))


def _model(name: str, info: Mapping[str, Any]) -> ModelProvenance:
    provenance = info.get("provenance") or {}
    base = provenance.get("base_checkpoint", "") if isinstance(provenance, Mapping) else ""
    return ModelProvenance(
        model=str(info.get("model_name") or name),
        checkpoint_name=str(info.get("checkpoint_name", "?")),
        checkpoint_sha256=str(info.get("checkpoint_sha256", "")),
        model_version=str(info.get("model_version", "?")),
        device=str(info.get("device", "?")),
        dtype=str(info.get("dtype", "?")),
        package_versions=_versions(info.get("package_versions") or {}),
        fine_tuned_from=str(base),
    )


def _run(entry: Mapping[str, Any]) -> RunProvenance:
    workflow = entry.get("workflow") or {}
    settings = result_settings(workflow)
    services = entry.get("services") or {}
    wall = entry.get("wall_time_s")
    return RunProvenance(
        dataset=str(entry.get("dataset", "?")),
        dataset_sha256=str(entry.get("dataset_sha256") or ""),
        n_materials=entry.get("n_materials"),
        started=str(entry.get("started", "?")),
        finished=entry.get("finished"),
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
        settings=settings,
        models=tuple(_model(name, info) for name, info in sorted(services.items())),
    )


def differences(runs: Sequence[RunProvenance]) -> dict[str, tuple[str, ...]]:
    """Settings, datasets and model checkpoints that are not the same in every run."""
    found: dict[str, tuple[str, ...]] = {}
    keys = sorted({key for run in runs for key in run.settings})
    for key in keys:
        values = tuple(dict.fromkeys(run.settings.get(key, "(unset)") for run in runs))
        if len(values) > 1:
            found[key] = values
    identities: dict[str, str] = {}
    for run in runs:
        identities.setdefault(run.dataset_identity, run.dataset_label)
    if len(identities) > 1:
        found["dataset"] = tuple(identities.values())
    checkpoints: dict[str, list[str]] = {}
    for run in runs:
        for model in run.models:
            checkpoints.setdefault(model.model, []).append(
                f"{model.checkpoint_name} ({model.checkpoint_sha256[:12]})"
            )
    for model, labels in sorted(checkpoints.items()):
        distinct = tuple(dict.fromkeys(labels))
        if len(distinct) > 1:
            found[f"checkpoint of {model}"] = distinct
    return found


def read_provenance(run_dir: Path) -> Provenance:
    """The provenance of a run folder (no runs if it has no readable manifest)."""
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Provenance(runs=(), source=str(path))
    except (OSError, ValueError) as error:
        raise ReportError(f"unreadable {path}: {error}") from None
    entries = manifest.get("runs", []) if isinstance(manifest, dict) else []
    runs = tuple(_run(entry) for entry in entries if isinstance(entry, Mapping))
    return Provenance(runs=runs, differing=differences(runs), source=str(path))


def refuse_mixed(provenance: Provenance) -> None:
    """Raises unless every run behind the results used the same settings and checkpoints.

    Raises:
        ReportError: naming each difference and the way out.
    """
    if not provenance.mixed:
        return
    listed = "; ".join(
        f"{key}: {' vs '.join(values)}" for key, values in provenance.differing.items()
    )
    raise ReportError(
        f"the results pool {len(provenance.runs)} runs whose settings differ ({listed}), so "
        "their rows are not comparable: run each setting into its own folder (and compare "
        "them with `umlip compare`), or pass --allow-mixed-settings to report them together "
        "with a warning at the top"
    )
