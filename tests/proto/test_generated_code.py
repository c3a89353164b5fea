"""The checked-in generated code matches the proto (regeneration leaves no drift)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATED = REPO_ROOT / "proto" / "src" / "umlip" / "potential" / "v1"


def test_generated_code_has_no_drift(tmp_path: Path) -> None:
    subprocess.run(
        [str(REPO_ROOT / "scripts" / "gen-proto.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    fresh = tmp_path / "umlip" / "potential" / "v1"
    names = sorted(p.name for p in fresh.glob("*.py*"))
    assert names == sorted(p.name for p in GENERATED.glob("*.py*"))
    mismatch = [n for n in names if not filecmp.cmp(fresh / n, GENERATED / n, shallow=False)]
    assert not mismatch, f"regenerate with scripts/gen-proto.sh: {mismatch} drifted"


def test_enums_follow_the_style_rules() -> None:
    from umlip.potential.v1 import potential_service_pb2 as pb

    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        prefix = "".join("_" + c if c.isupper() else c for c in enum.name).lstrip("_").upper()
        assert enum.values_by_number[0].name == f"{prefix}_UNSPECIFIED"
        assert all(v.name.startswith(prefix + "_") for v in enum.values)
