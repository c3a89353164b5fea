"""Files shipped inside the orchestrator package (no heavy imports: the CLI reads these
before it knows which command runs)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The default dataset of ``umlip run`` (see ``data/README.md`` next to it): 20 binaries
#: of the Materials Project elasticity set with their DFT K_VRH and G_VRH.
BUNDLED_SAMPLE = Path(
    str(resources.files("umlip_orchestrator") / "data" / "mp-binary-sample-20.json.gz")
)
