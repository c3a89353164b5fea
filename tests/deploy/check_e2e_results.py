"""Checks the tables of the container end-to-end run (scripts/container-e2e.sh).

Runs inside the orchestrator image (it has pyarrow and numpy), with the results folder
mounted: every expected model has a row for every material, at least one of them ok;
ok rows carry finite tensors and moduli, and finite stresses for each deformed cell;
the manifest holds each service's GetModelInfo under its endpoint name; and a service
that is a renamed copy of another (``--same A=B``) gives the same numbers.

Usage: python check_e2e_results.py RESULTS_DIR --models emt,chgnet,emt2 --materials 3
       [--same emt2=emt]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _finite(values: object, length: int) -> bool:
    array = np.asarray(values, dtype=float)
    return array.shape == (length,) and bool(np.isfinite(array).all())


def check(results: Path, models: list[str], materials: int, same: dict[str, str]) -> list[str]:
    """Every problem found (empty: all good)."""
    problems: list[str] = []
    rows = pq.read_table(results / "results.parquet").to_pylist()
    stresses = pq.read_table(results / "stresses.parquet").to_pylist()
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    if sorted(by_model) != sorted(models):
        problems.append(f"models in results.parquet: {sorted(by_model)}, expected {sorted(models)}")
    for model in models:
        mine = by_model.get(model, [])
        ok = [r for r in mine if r["status"] == "ok"]
        print(
            f"{model}: {len(mine)} rows, {len(ok)} ok, "
            f"K_VRH {[round(r['k_vrh_gpa'], 1) for r in ok]} GPa"
        )
        if len(mine) != materials:
            problems.append(f"{model}: {len(mine)} rows, expected {materials}")
        if not ok:
            problems.append(f"{model}: no ok row")
        for row in ok:
            where = f"{model} {row['material_id']}"
            if not _finite(row["elastic_tensor_gpa"], 36):
                problems.append(f"{where}: elastic tensor not 36 finite numbers")
            if not _finite(row["relaxed_cell_a"], 9):
                problems.append(f"{where}: relaxed cell not 9 finite numbers")
            for column in ("k_vrh_gpa", "g_vrh_gpa", "relaxed_energy_ev"):
                if row[column] is None or not math.isfinite(row[column]):
                    problems.append(f"{where}: {column} = {row[column]}")
            cells = [
                s
                for s in stresses
                if s["model"] == model and s["material_id"] == row["material_id"]
            ]
            if not cells or len(cells) != row["n_deformations"]:
                problems.append(
                    f"{where}: {len(cells)} stress rows, expected {row['n_deformations']}"
                )
            problems += [
                f"{where}: deformation {s['index']} stress not finite"
                for s in cells
                if not _finite(s["stress_gpa"], 6)
            ]
    run = json.loads((results / "manifest.json").read_text())["runs"][-1]
    for model in models:
        info = run["services"].get(model) if isinstance(run["services"], dict) else None
        if info is None:
            problems.append(f"manifest: no service {model}")
        elif info.get("model_name") != model:
            problems.append(f"manifest: {model} reports model_name {info.get('model_name')!r}")
    for copy, original in same.items():
        pairs = {(r["material_id"]): r for r in by_model.get(original, [])}
        for row in by_model.get(copy, []):
            other = pairs.get(row["material_id"])
            if other is None or other["status"] != row["status"]:
                problems.append(f"{copy} {row['material_id']}: status differs from {original}")
            elif row["status"] == "ok" and not np.allclose(
                row["elastic_tensor_gpa"], other["elastic_tensor_gpa"], rtol=1e-6, atol=1e-6
            ):
                problems.append(f"{copy} {row['material_id']}: tensor differs from {original}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Prints a summary and the problems; exit 1 if any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--models", required=True)
    parser.add_argument("--materials", type=int, required=True)
    parser.add_argument("--same", action="append", default=[], metavar="COPY=ORIGINAL")
    args = parser.parse_args(argv)
    same = dict(pair.split("=", 1) for pair in args.same)
    problems = check(args.results, args.models.split(","), args.materials, same)
    for problem in problems:
        print(f"FAIL {problem}")
    print("tables OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
