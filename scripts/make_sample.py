"""Builds the README's default benchmark sample, package data of the orchestrator
(``orchestrator/src/umlip_orchestrator/data/mp-binary-sample-20.json.gz``).

20 materials of the Materials Project binary elasticity set (see the README.md next to
it), drawn
reproducibly (seed 2025) among cells of at most 8 atoms: 8 whose elements ASE's EMT
supports (so the reference service computes them too) and 12 others.

    uv run python scripts/make_sample.py ../shared/data/mp-binary-pbe-elasticity-2025.1.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

EMT = {"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"}
OUT = (
    Path(__file__).resolve().parents[1]
    / "orchestrator/src/umlip_orchestrator/data/mp-binary-sample-20.json.gz"
)


def elements(entry: dict) -> set[str]:
    """Chemical symbols of an entry's structure."""
    return {sp["element"] for site in entry["structure"]["sites"] for sp in site["species"]}


def main(source: str) -> None:
    with gzip.open(source) as handle:
        entries = json.loads(handle.read())
    small = sorted(
        (e for e in entries if len(e["structure"]["sites"]) <= 8), key=lambda e: e["mp_id"]
    )
    rng = np.random.default_rng(2025)
    emt = [e for e in small if elements(e) <= EMT]
    other = [e for e in small if e not in emt]
    chosen = [emt[i] for i in rng.choice(len(emt), 8, replace=False)]
    chosen += [other[i] for i in rng.choice(len(other), 12, replace=False)]
    chosen.sort(key=lambda e: e["mp_id"])
    OUT.parent.mkdir(exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as handle:
        handle.write(json.dumps(chosen, sort_keys=True).encode())
    print(f"{OUT}: {len(chosen)} materials: {', '.join(e['formula'] for e in chosen)}")


if __name__ == "__main__":
    main(sys.argv[1])
