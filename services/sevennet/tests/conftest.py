"""Fixtures of the SevenNet service tests: one real server per session and the DFT frames."""

from __future__ import annotations

from umlip_serve import Settings
from umlip_serve.testing import (
    frames_fixture,
    potential_fixture,
    remote_fixture,
    service_fixture,
    shared_data,
)
from umlip_sevennet import SevenNetPotential

#: Shared reference data: <repo>/../shared/data (see its README).
DATA_DIR = shared_data(__file__)
MPTRJ_RANDOM = DATA_DIR / "mptrj-random-1k.xyz"

#: A real SevenNet server (this environment's Python) on a free loopback port.
service = service_fixture("umlip_sevennet", start_timeout_s=300)
#: Calculate through the real server (energy, forces and stress).
remote = remote_fixture(timeout_s=600)
#: The 1000 MPtrj DFT frames (fails when the shared data is absent).
mptrj_frames = frames_fixture(MPTRJ_RANDOM)
#: The adapter loaded in this process (default settings).
potential = potential_fixture(lambda: SevenNetPotential(Settings()))
