"""Where the tests find the real DFT data: ``../shared/data`` beside the repository."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MP_BINARY = SHARED_DATA / "mp-binary-pbe-elasticity-2025.1.json.gz"
DE_JONG = SHARED_DATA / "deJong2015_mp_elastic_tensor_1181.json.gz"
MPTRJ_RANDOM = SHARED_DATA / "mptrj-random-1k.xyz"


def load_json_gz(path: Path) -> list[dict[str, Any]]:
    """A gzip JSON list (fails loudly when the shared data is missing)."""
    if not path.is_file():
        raise FileNotFoundError(f"shared data {path} not found next to {REPO_ROOT}")
    with gzip.open(path, "rt") as handle:
        return json.load(handle)
