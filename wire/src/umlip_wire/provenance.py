"""The format of a fine-tuned checkpoint's provenance record, as both sides read it.

The harness writes and checks the record (``umlip_serve.provenance``); a client reads
it from ``GetModelInfo`` and a report reads it from a run's manifest.
"""

from __future__ import annotations

#: Kind tag of a provenance record (so a stray provenance.json is not mistaken for one).
PROVENANCE_KIND = "umlip-finetune"
