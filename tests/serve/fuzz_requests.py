"""Fuzz requests for a real potential service: hypothesis strategies and a checker.

Shared by ``tests/serve/test_fuzz.py`` (the short CI run) and ``benchmarks/fuzz.py``
(the long run). A :class:`Case` is the raw bytes of one Calculate request plus what the
server may answer: valid crystals, field-level mutations of a valid request (counts not
matching the arrays, wrong byte lengths, NaN/inf/huge numbers, singular, skewed or tiny
cells, bad atomic numbers, unknown property enums, empty batches), byte-level mutations
of its serialized bytes (bit flips, byte changes, truncation, insertion, deletion),
random garbage, and requests near and over the server's atom and message size limits.
:class:`Fuzzer` sends cases, checks every answer and, after every request that is not a
valid one, checks that a known good request is still answered correctly.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from ase import Atoms
from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from umlip.potential.v1 import potential_service_pb2 as pb

RAW_CALCULATE = "/umlip.potential.v1.PotentialService/Calculate"
#: Statuses a hardened server may answer to any request sent by one client at a time.
ALLOWED = frozenset(
    {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
OK = frozenset({grpc.StatusCode.OK})
INVALID = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
TOO_LARGE = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT})
ALL_PROPERTIES = (pb.PROPERTY_ENERGY, pb.PROPERTY_FORCES, pb.PROPERTY_STRESS)
#: Elements of the valid crystals (restricted to those a model supports).
COMMON_ELEMENTS = (1, 3, 6, 8, 11, 12, 13, 14, 22, 26, 28, 29, 30, 46, 47, 78, 79)

#: (fractional basis, nearest-neighbour distance per lattice constant)
_LATTICES = {
    "sc": (np.zeros((1, 3)), 1.0),
    "bcc": (np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), math.sqrt(3) / 2),
    "fcc": (np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]), 1 / math.sqrt(2)),
}


@dataclass(frozen=True)
class Target:
    """What the fuzzed server serves (from GetModelInfo) and how large valid cases get."""

    supported: frozenset[int]
    max_batch_atoms: int
    max_message_bytes: int
    max_valid_atoms: int = 16

    @property
    def elements(self) -> tuple[int, ...]:
        return tuple(z for z in COMMON_ELEMENTS if z in self.supported)

    @property
    def unsupported(self) -> tuple[int, ...]:
        return tuple(z for z in range(1, 119) if z not in self.supported)

    @classmethod
    def of(cls, channel: grpc.Channel, max_valid_atoms: int = 16) -> Target:
        stub = channel.unary_unary(
            "/umlip.potential.v1.PotentialService/GetModelInfo",
            request_serializer=pb.GetModelInfoRequest.SerializeToString,
            response_deserializer=pb.GetModelInfoResponse.FromString,
        )
        info = stub(pb.GetModelInfoRequest(), timeout=30)
        return cls(
            supported=frozenset(info.supported_atomic_numbers),
            max_batch_atoms=info.max_batch_atoms,
            max_message_bytes=info.max_message_bytes,
            max_valid_atoms=max_valid_atoms,
        )


@dataclass
class Case:
    """One request and what may come back.

    Attributes:
        kind: which generator made it (counted per kind).
        data: the raw request bytes.
        codes: statuses accepted.
        in_band: (structure index, StructureErrorCode name) that must fail in-band.
        valid: every structure must succeed (OK with finite outputs); ``atoms`` holds
            them for a reference energy.
    """

    kind: str
    data: bytes
    codes: frozenset[grpc.StatusCode] = ALLOWED
    in_band: tuple[tuple[int, str], ...] = ()
    valid: bool = False
    atoms: tuple[Atoms, ...] = ()
    properties: tuple[int, ...] = ()


@dataclass
class Fields:
    """A request's wire fields, editable independently of each other."""

    counts: list[int]
    numbers: bytes
    positions: bytes
    cells: bytes
    pbc: list[bool]
    properties: list[int] = field(default_factory=list)
    padding: bytes = b""

    @classmethod
    def of(cls, structures: Sequence[Atoms], properties: Sequence[int] = ()) -> Fields:
        return cls(
            counts=[len(a) for a in structures],
            numbers=np.concatenate([a.numbers for a in structures]).astype("<u4").tobytes(),
            positions=np.concatenate([a.positions for a in structures]).astype("<f8").tobytes(),
            cells=np.stack([np.asarray(a.cell) for a in structures]).astype("<f8").tobytes(),
            pbc=[bool(p) for a in structures for p in a.pbc],
            properties=list(properties),
        )

    def encode(self) -> bytes:
        batch = pb.StructureBatch(
            atoms_per_structure=self.counts,
            atomic_numbers=self.numbers,
            positions=self.positions,
            cells=self.cells,
            pbc=self.pbc,
        )
        data = pb.CalculateRequest(batch=batch, properties=self.properties).SerializeToString()
        if self.padding:  # an unknown length-delimited field 15 (ignored by the server)
            data += b"\x7a" + _varint(len(self.padding)) + self.padding
        return data

    def set_f64(self, name: str, index: int, value: float) -> None:
        array = np.frombuffer(getattr(self, name), dtype="<f8").copy()
        array[index % len(array)] = value
        setattr(self, name, array.tobytes())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@st.composite
def crystals(draw: st.DrawFn, target: Target, max_atoms: int | None = None) -> Atoms:
    """A sane periodic crystal: sc/bcc/fcc supercell, strained, rattled, random elements."""
    max_atoms = max_atoms or target.max_valid_atoms
    lattice = draw(st.sampled_from(sorted(_LATTICES)))
    basis, nn_per_a = _LATTICES[lattice]
    a = draw(st.floats(2.3, 3.0)) / nn_per_a
    reps = [1, 1, 1]
    for axis in range(3):
        if len(basis) * math.prod(reps) * 2 <= max_atoms and draw(st.booleans()):
            reps[axis] = 2
    rng = _rng(draw)
    grid = np.array(
        [(i, j, k) for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])]
    )
    fractional = ((basis[None, :, :] + grid[:, None, :]) / reps).reshape(-1, 3)
    strain = np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))
    cell = (a * np.diag(reps)) @ strain
    positions = fractional @ cell + rng.normal(0.0, 0.03, fractional.shape)
    numbers = draw(
        st.lists(st.sampled_from(target.elements), min_size=len(positions), max_size=len(positions))
    )
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


_PROPERTY_SETS = st.sampled_from(
    [(), ALL_PROPERTIES, (pb.PROPERTY_ENERGY,), (pb.PROPERTY_ENERGY, pb.PROPERTY_FORCES),
     (pb.PROPERTY_STRESS, pb.PROPERTY_ENERGY, pb.PROPERTY_ENERGY)]
)  # fmt: skip


@st.composite
def valid_cases(draw: st.DrawFn, target: Target) -> Case:
    structures = tuple(draw(st.lists(crystals(target), min_size=1, max_size=4)))
    properties = draw(_PROPERTY_SETS)
    data = Fields.of(structures, properties).encode()
    return Case("valid", data, OK, valid=True, atoms=structures, properties=properties)


_BAD_FLOATS = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, 1e17, -1e17, 1e300])


@st.composite
def field_cases(draw: st.DrawFn, target: Target) -> Case:
    """A valid request with one field-level mutation and its expected answer."""
    structures = draw(st.lists(crystals(target), min_size=1, max_size=3))
    fields = Fields.of(structures, draw(_PROPERTY_SETS))
    n_structures = len(structures)
    index = draw(st.integers(0, n_structures - 1))
    first = sum(fields.counts[:index])
    atom = first + draw(st.integers(0, fields.counts[index] - 1))
    mutation = draw(
        st.sampled_from(
            ["count-mismatch", "huge-count", "zero-count", "many-counts", "bytes-numbers",
             "bytes-positions", "bytes-cells", "pbc-length", "bad-position", "bad-cell",
             "singular-cell", "tiny-cell", "skewed-cell", "far-position", "bad-z",
             "unsupported-z", "close-atoms", "unknown-property", "empty-batch",
             "empty-arrays", "pbc-flip", "stack"]
        )
    )  # fmt: skip
    codes, in_band = INVALID, ()
    if mutation == "count-mismatch":
        delta = draw(st.integers(-3, 50).filter(bool))
        fields.counts[index] = max(0, fields.counts[index] + delta)
    elif mutation == "huge-count":
        fields.counts[index] = draw(
            st.sampled_from([2**32 - 1, 2**31, 10**9, target.max_batch_atoms + 1])
        )
    elif mutation == "zero-count":
        fields.counts[index] = 0
    elif mutation == "many-counts":  # a million structures declared, no arrays for them
        fields.counts += [1] * draw(st.sampled_from([1, 1000, 10**6]))
        codes = TOO_LARGE
    elif mutation.startswith("bytes-"):
        name = mutation.removeprefix("bytes-")
        old = getattr(fields, name)
        delta = draw(st.integers(-len(old), 64).filter(bool))
        setattr(fields, name, old[:delta] if delta < 0 else old + bytes(delta))
    elif mutation == "pbc-length":
        delta = draw(st.integers(-len(fields.pbc), 6).filter(bool))
        fields.pbc = fields.pbc[:delta] if delta < 0 else fields.pbc + [True] * delta
    elif mutation == "bad-position":
        fields.set_f64("positions", 3 * atom + draw(st.integers(0, 2)), draw(_BAD_FLOATS))
        codes, in_band = OK, ((index, "INVALID_STRUCTURE"),)
    elif mutation == "bad-cell":
        fields.set_f64("cells", 9 * index + draw(st.integers(0, 8)), draw(_BAD_FLOATS))
        codes, in_band = OK, ((index, "INVALID_STRUCTURE"),)
    elif mutation in ("singular-cell", "tiny-cell", "skewed-cell"):
        cells = np.frombuffer(fields.cells, dtype="<f8").reshape(-1, 3, 3).copy()
        positions = np.frombuffer(fields.positions, dtype="<f8").reshape(-1, 3).copy()
        cell = cells[index]
        mine = slice(first, first + fields.counts[index])
        if mutation == "singular-cell":
            row = draw(st.integers(0, 2))
            cell[row] = draw(st.sampled_from([0.0, 1e-9])) * cell[row] + (
                cell[(row + 1) % 3] * draw(st.sampled_from([0.0, 1.0, -2.0]))
            )
            codes, in_band = OK, ((index, "INVALID_STRUCTURE"),)
        elif mutation == "tiny-cell":
            scale = draw(st.sampled_from([1e-300, 1e-9, 1e-3, 0.05, 0.2, 0.5, 0.8]))
            frac = np.linalg.solve(cell.T, positions[mine].T).T
            cell *= scale
            positions[mine] = frac @ cell
            codes = OK
            if scale <= 0.2:
                in_band = ((index, "INVALID_STRUCTURE"),)
        else:  # skew: b += k a (same lattice, a badly unreduced basis), atoms unchanged
            k = draw(st.sampled_from([1.0, 3.0, 10.0, 100.0, 1e3, 1e4, 1e5]))
            i, j = draw(st.permutations([0, 1, 2]))[:2]
            cell[i] = cell[i] + k * cell[j]
            codes = OK
        fields.cells = cells.astype("<f8").tobytes()
        fields.positions = positions.astype("<f8").tobytes()
    elif mutation == "far-position":  # within the coordinate limit, far outside the cell
        fields.set_f64("positions", 3 * atom, draw(st.sampled_from([1e3, -1e5, 9.9e5])))
        codes = OK
    elif mutation == "bad-z":
        numbers = np.frombuffer(fields.numbers, dtype="<u4").copy()
        numbers[atom] = draw(st.sampled_from([0, 119, 255, 2**31, 2**32 - 1]))
        fields.numbers = numbers.tobytes()
        codes, in_band = OK, ((index, "INVALID_STRUCTURE"),)
    elif mutation == "unsupported-z":
        if not target.unsupported:
            return draw(field_cases(target))
        numbers = np.frombuffer(fields.numbers, dtype="<u4").copy()
        numbers[atom] = draw(st.sampled_from(target.unsupported))
        fields.numbers = numbers.tobytes()
        codes, in_band = OK, ((index, "UNSUPPORTED_ELEMENT"),)
    elif mutation == "close-atoms":
        if fields.counts[index] < 2:
            return draw(field_cases(target))
        positions = np.frombuffer(fields.positions, dtype="<f8").reshape(-1, 3).copy()
        other = first + (atom - first + 1) % fields.counts[index]
        positions[atom] = positions[other] + draw(st.floats(0.0, 0.05))
        fields.positions = positions.tobytes()
        codes, in_band = OK, ((index, "INVALID_STRUCTURE"),)
    elif mutation == "unknown-property":
        fields.properties.append(draw(st.sampled_from([0, 4, 7, 1000, -1, 2**31 - 1])))
    elif mutation == "empty-batch":
        fields = Fields([], b"", b"", b"", [], fields.properties)
    elif mutation == "empty-arrays":
        fields.numbers = fields.positions = fields.cells = b""
    elif mutation == "pbc-flip":
        fields.pbc = draw(
            st.lists(st.booleans(), min_size=len(fields.pbc), max_size=len(fields.pbc))
        )
        codes = OK
    else:  # stack: several of the above at once; any allowed answer
        first_case = draw(field_cases(target))
        data = bytearray(first_case.data)
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, max(0, len(data) - 1)))
            data[position : position + 1] = bytes([draw(st.integers(0, 255))])
        return Case("field:stack", bytes(data))
    return Case(f"field:{mutation}", fields.encode(), codes, in_band)


@st.composite
def byte_cases(draw: st.DrawFn, target: Target) -> Case:
    """The serialized bytes of a valid request, flipped, overwritten, cut or spliced."""
    structures = draw(st.lists(crystals(target, 8), min_size=1, max_size=3))
    data = bytearray(Fields.of(structures, draw(_PROPERTY_SETS)).encode())
    operations = draw(
        st.lists(
            st.sampled_from(["flip", "set", "truncate", "insert", "delete"]), min_size=1, max_size=4
        )
    )
    for operation in operations:
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip":
            if data:
                data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set":
            if data:
                data[at] = draw(
                    st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))])
                )
        elif operation == "truncate":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at : at + draw(st.integers(1, 32))]
    return Case(f"bytes:{operations[0]}", bytes(data))


@st.composite
def garbage_cases(draw: st.DrawFn, target: Target) -> Case:
    """Random bytes, and random sequences of protobuf tags with lying lengths."""
    if draw(st.booleans()):
        return Case("garbage:random", draw(st.binary(max_size=2048)))
    data = bytearray()
    for _ in range(draw(st.integers(1, 8))):
        tag = draw(st.integers(1, 20)) << 3 | draw(st.integers(0, 7))
        data += _varint(tag) + _varint(draw(st.sampled_from([0, 1, 9, 127, 2**31, 2**63])))
        data += draw(st.binary(max_size=64))
    return Case("garbage:tags", bytes(data))


@st.composite
def limit_cases(draw: st.DrawFn, target: Target) -> Case:
    """Batches at and over the atom limit; messages at and over the byte limit."""
    limit = target.max_batch_atoms
    # Requests over the byte limit take gRPC ~0.1 s to refuse: fewer of them.
    kind = draw(
        st.sampled_from(["atoms-at", "atoms-over"] * 3 + ["bytes-near", "bytes-over", "huge"])
    )
    if kind.startswith("atoms"):
        wanted = (
            limit - draw(st.integers(0, 2))
            if kind == "atoms-at"
            else limit + draw(st.integers(1, 40))
        )
        unit = draw(crystals(target, max_atoms=min(8, limit)))
        structures: list[Atoms] = []
        while sum(map(len, structures)) + len(unit) <= wanted:
            structures.append(unit)
        rest = wanted - sum(map(len, structures))
        if rest:
            structures.append(unit[:rest])
        data = Fields.of(structures).encode()
        if kind == "atoms-at" and len(data) < target.max_message_bytes:
            return Case("limit:atoms-at", data, OK, valid=True, atoms=tuple(structures))
        return Case(f"limit:{kind}", data, TOO_LARGE)
    fields = Fields.of([draw(crystals(target, 4))])
    base = len(fields.encode())
    if kind == "bytes-near":
        size = target.max_message_bytes - draw(st.integers(16, 200))
        fields.padding = bytes(max(0, size - base))
        return Case("limit:bytes-near", fields.encode(), OK)
    over = target.max_message_bytes + (1 if kind == "bytes-over" else 4 * target.max_message_bytes)
    fields.padding = bytes(over - base)
    return Case(f"limit:{kind}", fields.encode(), frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED}))


def cases(target: Target) -> st.SearchStrategy[Case]:
    """Any kind of case, weighted towards the cheap malformed ones."""
    return st.one_of(
        valid_cases(target),
        field_cases(target),
        field_cases(target),
        field_cases(target),
        byte_cases(target),
        byte_cases(target),
        garbage_cases(target),
        garbage_cases(target),
        limit_cases(target),
    )


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    payload: bytes | None
    latency_s: float


def send(channel: grpc.Channel, data: bytes, timeout_s: float) -> Outcome:
    """One raw Calculate call; never raises for a status."""
    call = channel.unary_unary(RAW_CALCULATE, request_serializer=None, response_deserializer=None)
    started = time.monotonic()
    try:
        payload = call(data, timeout=timeout_s)
        return Outcome(grpc.StatusCode.OK, "", payload, time.monotonic() - started)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", None, time.monotonic() - started)


def good_structures() -> list[Atoms]:
    """The probe: fcc Cu and Al, which every model here supports."""
    from ase.build import bulk

    return [bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.05)]


#: Reference energies of structures (eV), or None when the model has no in-process one.
Reference = Callable[[Atoms], float] | None


@dataclass
class Fuzzer:
    """Sends cases, checks each answer, probes the server with a known good request.

    Args:
        channel: to the server.
        reference: in-process energy of a structure (EMT); None compares the probe
            with the server's first answer instead.
        timeout_s: deadline of every call; a call past it is a hang.
        strict: raise AssertionError at the first problem (tests); else record it.
    """

    channel: grpc.Channel
    reference: Reference = None
    timeout_s: float = 10.0
    strict: bool = True
    rtol: float = 1e-9
    atol: float = 1e-8
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    max_latency_s: float = 0.0
    slowest: str = ""
    _probe: bytes = b""
    _probe_counts: tuple[int, ...] = ()
    _probe_energies: list[float] | None = None

    def __post_init__(self) -> None:
        structures = good_structures()
        self._probe = Fields.of(structures).encode()
        self._probe_counts = tuple(len(a) for a in structures)
        if self.reference is not None:
            self._probe_energies = [self.reference(a) for a in structures]

    def run(self, batch: Sequence[Case]) -> None:
        for case in batch:
            self.check(case)
            if not case.valid:
                self.probe()

    def _call(self, kind: str, data: bytes) -> Outcome:
        outcome = send(self.channel, data, self.timeout_s)
        self.requests += 1
        self.codes[outcome.code.name] += 1
        self.kinds[kind] += 1
        if outcome.latency_s > self.max_latency_s:
            self.max_latency_s, self.slowest = outcome.latency_s, kind
        return outcome

    def _problem(self, case: Case, text: str) -> None:
        message = f"{case.kind}: {text} (request {len(case.data)} bytes: {case.data[:120]!r})"
        if self.strict:
            raise AssertionError(message)
        self.problems.append(message)

    def probe(self) -> None:
        case = Case("probe", self._probe, OK, valid=True)
        outcome = self._call("probe", self._probe)
        energies = self._answer(case, outcome, list(self._probe_counts))
        if energies is None:
            return
        if self._probe_energies is None:
            self._probe_energies = energies
        elif not np.allclose(energies, self._probe_energies, rtol=self.rtol, atol=self.atol):
            self._problem(case, f"probe energies {energies} != {self._probe_energies}")

    def check(self, case: Case) -> None:
        outcome = self._call(case.kind, case.data)
        try:
            request = pb.CalculateRequest.FromString(case.data)
            counts = list(request.batch.atoms_per_structure)
        except (DecodeError, ValueError, RuntimeError):
            counts = None
        energies = self._answer(case, outcome, counts)
        if energies is not None and case.atoms and self.reference is not None:
            expected = [self.reference(a) for a in case.atoms]
            if not np.allclose(energies, expected, rtol=self.rtol, atol=self.atol):
                self._problem(case, f"energies {energies} != reference {expected}")

    def _answer(self, case: Case, outcome: Outcome, counts: list[int] | None) -> list[float] | None:
        """Checks one answer; the energies of a valid case's structures."""
        if outcome.code not in case.codes:
            self._problem(
                case,
                f"status {outcome.code.name} ({outcome.details[:200]!r}) after "
                f"{outcome.latency_s:.2f} s, expected one of {sorted(c.name for c in case.codes)}",
            )
            return None
        if "Traceback" in outcome.details:
            self._problem(case, f"traceback in details: {outcome.details[:300]!r}")
        if outcome.payload is None:
            return None
        response = pb.CalculateResponse.FromString(outcome.payload)
        if counts is None:
            self._problem(case, "undecodable request answered OK")
            return None
        if len(response.results) != len(counts):
            self._problem(case, f"{len(response.results)} results for {len(counts)} structures")
            return None
        expected_errors = dict(case.in_band)
        energies = []
        for index, (result, n_atoms) in enumerate(zip(response.results, counts, strict=True)):
            wanted = expected_errors.get(index)
            if result.HasField("error"):
                name = pb.StructureErrorCode.Name(result.error.code)
                if case.valid or (wanted and not name.endswith(wanted)):
                    self._problem(case, f"structure {index}: {name} {result.error.message!r}")
                if not result.error.message or "Traceback" in result.error.message:
                    self._problem(case, f"structure {index}: bad message {result.error.message!r}")
                continue
            if wanted:
                self._problem(case, f"structure {index} succeeded, expected {wanted}")
                continue
            if result.HasField("energy"):
                if not math.isfinite(result.energy):
                    self._problem(case, f"structure {index}: energy {result.energy}")
                energies.append(result.energy)
            if result.forces and len(result.forces) != 24 * n_atoms:
                self._problem(case, f"structure {index}: {len(result.forces)} force bytes")
            if result.stress and len(result.stress) != 48:
                self._problem(case, f"structure {index}: {len(result.stress)} stress bytes")
            for name in ("forces", "stress"):
                values = np.frombuffer(getattr(result, name), dtype="<f8")
                if not np.all(np.isfinite(values)):
                    self._problem(case, f"structure {index}: non-finite {name}")
        wants_energy = not case.properties or pb.PROPERTY_ENERGY in case.properties
        return energies if case.valid and wants_energy else None

    def report(self) -> str:
        lines = [f"requests: {self.requests}"]
        lines += [f"  {code:<20} {count}" for code, count in sorted(self.codes.items())]
        lines.append(f"max latency: {self.max_latency_s * 1000:.1f} ms ({self.slowest})")
        lines.append("by kind: " + ", ".join(f"{k}={n}" for k, n in sorted(self.kinds.items())))
        return "\n".join(lines)
