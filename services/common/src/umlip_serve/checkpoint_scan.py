"""What a pickled checkpoint would import, read without unpickling it (no torch needed).

Model checkpoints are pickles: loading one may call any Python callable it names (a
``GLOBAL``), ``os.system`` included. Several libraries can only load theirs with
``torch.load(weights_only=False)`` (MACE pickles whole modules), so before the adapter
loads a checkpoint *file*, the harness lists every global its pickles reference, by
walking the opcodes with :mod:`pickletools` (nothing is executed), and refuses the file
if one lies outside the adapter's declared allowlist
(:attr:`umlip_serve.potential.Potential.checkpoint_globals`).

A global whose name the scan cannot establish (a ``STACK_GLOBAL`` fed by something other
than string pushes, a copyreg extension code) is reported as unverifiable, and the file
is refused too: the scan never guesses in the file's favour.

Handles torch's zip format (every ``*.pkl`` member) and plain pickles, including the
sequence of pickles of torch's legacy format (its tensor bytes follow the last pickle;
the scan stops at the first bytes that do not parse as a pickle). It does not cover
TorchScript archives, whose ``code/`` runs on ``torch.jit.load``: no adapter loads those.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Marks a global whose module or name the scan could not read from the file.
UNVERIFIABLE = "<unverifiable>"

#: Globals that plain tensor and state-dict checkpoints need (torch's tensor and storage
#: rebuilders, ordered dicts, numpy arrays, byte strings of protocol 2): none of them
#: runs code chosen by the file. Adapters extend this with their own classes.
TENSOR_CHECKPOINT_GLOBALS: tuple[str, ...] = (
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    *(
        f"torch.{kind}Storage"
        for kind in (
            "Float",
            "Double",
            "Half",
            "BFloat16",
            "Long",
            "Int",
            "Short",
            "Char",
            "Byte",
            "Bool",
            "ComplexFloat",
            "ComplexDouble",
            "Untyped",
        )
    ),
    *(
        f"torch.{dtype}"
        for dtype in (
            "float16",
            "bfloat16",
            "float32",
            "float64",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "bool",
        )
    ),
    "collections.OrderedDict",
    "collections.defaultdict",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.slice",
    "builtins.complex",
    "__builtin__.set",
    "__builtin__.frozenset",
    "__builtin__.slice",
    "__builtin__.complex",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.dtypes.",
)

_STRING_PUSHES = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
_MEMO_PUTS = frozenset({"BINPUT", "LONG_BINPUT", "PUT"})
_MEMO_GETS = frozenset({"BINGET", "LONG_BINGET", "GET"})


def checkpoint_globals(path: str | Path) -> set[str]:
    """Every ``module.name`` the pickles of a checkpoint file would import.

    A file that holds no pickle (another format) has none.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.endswith(".pkl")]
            found: set[str] = set()
            for name in members:
                found |= _globals_of_stream(io.BytesIO(archive.read(name)))
            return found
    with path.open("rb") as handle:
        return _globals_of_stream(handle)


def disallowed_globals(found: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The globals of ``found`` that no entry of ``allowed`` admits, sorted.

    An entry ending in "." admits a module and its submodules ("mace." admits
    "mace.modules.models.MACE"); any other entry admits exactly that global.
    """
    allowed = tuple(allowed)
    prefixes = tuple(entry for entry in allowed if entry.endswith("."))
    exact = {entry for entry in allowed if not entry.endswith(".")}
    return sorted(
        name
        for name in found
        if name == UNVERIFIABLE or not (name in exact or name.startswith(prefixes))
    )


def _globals_of_stream(stream: io.BufferedIOBase | io.BytesIO) -> set[str]:
    """Globals of the pickles at the start of ``stream``; none if it holds no pickle."""
    found: set[str] = set()
    while stream.read(1):
        stream.seek(-1, io.SEEK_CUR)
        try:
            # Collected as they come: an unpickler runs the opcodes before a bad one too.
            for name in _globals_of_pickle(pickletools.genops(stream)):
                found.add(name)
        except Exception:  # no pickle (any more): legacy tensor bytes, or not a pickle at all
            break
    return found


def _globals_of_pickle(
    ops: Iterator[tuple[pickletools.OpcodeInfo, object, int | None]],
) -> Iterator[str]:
    """The globals one pickle references; unreadable ones as :data:`UNVERIFIABLE`."""
    memo: dict[int, str | None] = {}
    recent: list[str | None] = []  # values pushed by the latest opcodes (None: not a string)
    for opcode, argument, _ in ops:
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attribute = str(argument).partition(" ")
            yield f"{module}.{attribute}"
            recent = [None]
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and recent[-2] is not None and recent[-1] is not None:
                yield f"{recent[-2]}.{recent[-1]}"
            else:
                yield UNVERIFIABLE
            recent = [None]
        elif name in ("EXT1", "EXT2", "EXT4"):
            yield UNVERIFIABLE
            recent = [None]
        elif name in _STRING_PUSHES:
            value = argument.decode("latin-1") if isinstance(argument, bytes) else str(argument)
            recent = [*recent[-1:], value]
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in _MEMO_PUTS:
            memo[int(argument)] = recent[-1] if recent else None  # type: ignore[arg-type]
        elif name in _MEMO_GETS:
            recent = [*recent[-1:], memo.get(int(argument))]  # type: ignore[arg-type]
        elif name in ("FRAME", "PROTO"):
            continue
        else:
            recent = [*recent[-1:], None]
