"""Fixtures of the HIENet service tests: one real server per session and the DFT frames."""

from __future__ import annotations

from umlip_hienet import HIENetPotential
from umlip_serve import Settings
from umlip_serve.testing import (
    frames_fixture,
    potential_fixture,
    remote_fixture,
    service_fixture,
    shared_data,
)

#: Shared reference data: <repo>/../shared/data (see its README).
MPTRJ_RANDOM = shared_data(__file__) / "mptrj-random-1k.xyz"

#: A real HIENet server (this environment's Python) on a free loopback port.
service = service_fixture("umlip_hienet", start_timeout_s=300)
#: Calculate through the real server (energy, forces and stress).
remote = remote_fixture(timeout_s=600)
#: The 1000 MPtrj DFT frames (fails when the shared data is absent).
mptrj_frames = frames_fixture(MPTRJ_RANDOM)
#: The adapter loaded in this process (default settings).
potential = potential_fixture(lambda: HIENetPotential(Settings()))
