"""A CHGNet checkpoint written by torch.save is scanned before CHGNet unpickles it.

The shipped pretrained weights pass the scan (every other test loads them); a file saved
by torch with an object that would run a command when unpickled is refused with a clear
message, and the command never runs (its marker file stays absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from chgnet.model import CHGNet

from umlip_chgnet.potential import CHGNetPotential
from umlip_serve import CalculatorSetupError, Settings, file_sha256


class Payload:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_a_checkpoint_with_a_payload_is_refused_before_loading(tmp_path: Path) -> None:
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    clean = tmp_path / "clean.pth.tar"
    torch.save({"model": model.as_dict(), "extra": {"note": "fine"}}, clean)
    info = CHGNetPotential(Settings(checkpoint=str(clean))).load()  # loads: allowed globals
    assert info.checkpoint_sha256 == file_sha256(clean)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"model": model.as_dict(), "extra": Payload(f"touch {marker}")}, evil)
    with pytest.raises(CalculatorSetupError, match=r"system when unpickled.*refusing to load"):
        CHGNetPotential(Settings(checkpoint=str(evil))).load()
    assert not marker.exists()
