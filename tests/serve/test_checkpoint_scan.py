"""A checkpoint that would run code when unpickled is refused before it is loaded.

The scan reads a pickle's opcodes (nothing is executed) and lists the globals it would
import; the reference is :mod:`pickle` itself: the files are made by ``pickle.dumps`` or
written opcode by opcode, and a "payload" global that would create a marker file proves,
by the file's absence, that the refused checkpoint never ran.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from test_checkpoint_sha256 import Recorder, load

from umlip_serve import CalculatorSetupError
from umlip_serve.checkpoint_scan import (
    TENSOR_CHECKPOINT_GLOBALS,
    UNVERIFIABLE,
    checkpoint_globals,
    disallowed_globals,
)
from umlip_wire.process import ServiceProcess, ServiceStartError


class Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def write_zip_checkpoint(path: Path, payload: object) -> Path:
    """A file laid out as torch.save's zip format: ``<name>/data.pkl`` holds the pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("model/version", "3\n")
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_globals_are_listed_for_every_protocol(protocol: int, tmp_path: Path) -> None:
    state = OrderedDict(weights=np.arange(3.0), bias={1, 2})
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    found = checkpoint_globals(path)
    assert "collections.OrderedDict" in found
    assert any(name.startswith("numpy") for name in found)
    assert UNVERIFIABLE not in found
    assert disallowed_globals(found, TENSOR_CHECKPOINT_GLOBALS) == []
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([state, Payload("true")], protocol=protocol))
    assert disallowed_globals(checkpoint_globals(evil), TENSOR_CHECKPOINT_GLOBALS) == [
        f"{os.system.__module__}.system"
    ]


def test_memoized_names_are_followed_and_unreadable_ones_are_refused(tmp_path: Path) -> None:
    posix = os.system.__module__.encode()
    # protocol 4: "posix" and "system" memoized, STACK_GLOBAL, then the same names again
    # from the memo (BINGET), STACK_GLOBAL.
    memoized = (
        b"\x80\x04\x8c" + bytes([len(posix)]) + posix + b"\x94\x8c\x06system\x94\x93"
        b"h\x00h\x01\x93\x86."
    )
    path = tmp_path / "memo.pkl"
    path.write_bytes(memoized)
    assert checkpoint_globals(path) == {f"{posix.decode()}.system"}
    # A module name that comes from a list in the memo cannot be read: refused.
    unreadable = b"\x80\x04]\x94h\x00\x8c\x06system\x93."
    path.write_bytes(unreadable)
    assert checkpoint_globals(path) == {UNVERIFIABLE}
    assert disallowed_globals({UNVERIFIABLE}, ["builtins."]) == [UNVERIFIABLE]


def test_a_global_before_a_corrupt_opcode_is_still_seen(tmp_path: Path) -> None:
    body = pickle.dumps(Payload("true"), protocol=2)[:-1] + b"\xff\xff"  # no STOP, junk
    path = tmp_path / "truncated.pkl"
    path.write_bytes(body)
    assert f"{os.system.__module__}.system" in checkpoint_globals(path)


def test_a_file_that_is_no_pickle_has_no_globals(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"weights")
    assert checkpoint_globals(path) == set()


def test_the_harness_refuses_a_payload_before_the_adapter_loads(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = write_zip_checkpoint(
        tmp_path / "model.pt", {"state": OrderedDict(), "extra": Payload(f"touch {marker}")}
    )
    Recorder.loads = 0
    with pytest.raises(CalculatorSetupError, match=r"would import posix.system|nt.system"):
        load(str(checkpoint), "")
    assert Recorder.loads == 0 and not marker.exists()
    clean = write_zip_checkpoint(tmp_path / "clean.pt", {"state": OrderedDict(a=np.zeros(2))})
    load(str(clean), "")
    assert Recorder.loads == 1


def test_a_real_service_refuses_the_payload_and_says_why(emt_python: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    checkpoint = write_zip_checkpoint(tmp_path / "model.pt", Payload(f"touch {marker}"))
    service = ServiceProcess(
        python=emt_python,
        module="umlip_emt",
        env={"UMLIP_CHECKPOINT": str(checkpoint)},
        start_timeout_s=60,
    )
    with pytest.raises(ServiceStartError):
        service.start()
    log = service.log_path.read_text()
    assert "refusing to load it" in log and "UMLIP_CHECKPOINT_SHA256" in log
    assert not marker.exists()
