"""UMLIP_CHECKPOINT_SHA256: a checkpoint that is not the expected one is never served.

A checkpoint file is hashed before the adapter loads it (model files are pickles); the
checkpoint a model reports after loading (a pretrained name resolved by its library) is
checked too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from umlip_serve import (
    CalculatorSetupError,
    ModelInfo,
    Potential,
    Property,
    Settings,
    StructureBatch,
    StructureResult,
    file_sha256,
)
from umlip_serve.server import create_server, load_into


class Recorder(Potential):
    """Reports the sha256 of its checkpoint file (or a fixed one for a name)."""

    name = "recorder"
    loads = 0

    def load(self) -> ModelInfo:
        Recorder.loads += 1
        path = Path(self.settings.checkpoint)
        sha = file_sha256(path) if path.is_file() else hashlib.sha256(b"pretrained").hexdigest()
        return ModelInfo(
            model_version="0",
            checkpoint_name=self.settings.checkpoint,
            checkpoint_sha256=sha,
            supported_atomic_numbers=frozenset({29}),
            cutoff=5.0,
        )

    def calculate(
        self, batch: StructureBatch, properties: Sequence[Property]
    ) -> list[StructureResult]:
        raise NotImplementedError


def load(checkpoint: str, expected: str) -> None:
    settings = Settings(port=0, checkpoint=checkpoint, checkpoint_sha256=expected)
    potential = Recorder(settings)
    server, _, servicer, health = create_server(potential, settings)
    try:
        load_into(potential, settings, servicer, health).close()
    finally:
        server.stop(None)


def test_a_checkpoint_file_is_checked_before_it_is_loaded(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    right = hashlib.sha256(b"weights").hexdigest()
    Recorder.loads = 0
    load(str(checkpoint), right.upper())  # case does not matter
    assert Recorder.loads == 1
    with pytest.raises(CalculatorSetupError, match="before loading"):
        load(str(checkpoint), "0" * 64)
    assert Recorder.loads == 1  # the wrong file was never unpickled
    load(str(checkpoint), "")  # unset: not checked
    assert Recorder.loads == 2


def test_a_pretrained_name_is_checked_as_loaded() -> None:
    load("pretrained-name", hashlib.sha256(b"pretrained").hexdigest())
    with pytest.raises(CalculatorSetupError, match="as loaded"):
        load("pretrained-name", "f" * 64)
