"""Server settings, read once per process from ``UMLIP_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from umlip_wire.cpus import available_cpus
from umlip_wire.errors import CalculatorSetupError

_PREFIX = "UMLIP_"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a potential server needs to know, validated on construction.

    Attributes:
        host: address to bind, e.g. "127.0.0.1" (UMLIP_HOST).
        port: TCP port; 0 picks a free one (UMLIP_PORT).
        port_file: if set, the bound port is written there once serving (UMLIP_PORT_FILE).
        device: "cpu", "cuda", "cuda:1"... passed to the adapter (UMLIP_DEVICE).
        dtype: "float32" or "float64" (UMLIP_DTYPE); "" (the default) runs the model in
            its preferred precision (the first of ``Potential.supported_dtypes``).
        checkpoint: model name or local checkpoint path; "" = the adapter's default
            (UMLIP_CHECKPOINT).
        max_batch_atoms: most atoms in one Calculate call and in one merged model call
            (UMLIP_MAX_BATCH_ATOMS).
        batch_wait_ms: how long the dynamic batcher waits for more concurrent calls
            before running a model call (UMLIP_BATCH_WAIT_MS). The default 0 adds no
            latency: calls that queued while the model was busy are merged into the
            next model call; a few ms helps a GPU model under bursty load.
        max_edges_per_pass: most graph edges in one forward pass (CHGNet, SevenNet,
            HIENet, MACE; UMLIP_MAX_EDGES_PER_PASS). 0 (the default): for CHGNet,
            SevenNet and HIENet sized to the device, their CPU budget or on a GPU what
            fits in part of its memory (:func:`umlip_serve.passes.edge_budget`); MACE
            runs a call in one pass. Passes that run out of memory are split anyway.
        max_queued_atoms: most atoms waiting for or in the model at once; a call that
            would go over is refused with RESOURCE_EXHAUSTED (load shedding; clients
            retry with backoff). One call alone is always admitted. 0 (the default)
            means 4 x ``max_batch_atoms`` (UMLIP_MAX_QUEUED_ATOMS).
        dynamic_batching: merge concurrent calls into one model call; "0"/"false" runs
            each call on its own (UMLIP_DYNAMIC_BATCHING).
        grace_period_s: how long in-flight calls may finish after SIGTERM
            (UMLIP_GRACE_PERIOD_S).
        max_message_bytes: largest request/response message (UMLIP_MAX_MESSAGE_BYTES).
        max_workers: gRPC handler threads (UMLIP_MAX_WORKERS).
        max_concurrent_calls: most calls in progress or waiting for a handler thread; more
            are refused at once with RESOURCE_EXHAUSTED, which clients retry
            (UMLIP_MAX_CONCURRENT_CALLS). 0 (the default) means 4 x ``max_workers``.
        torch_threads: intra-op threads for torch-based adapters (UMLIP_TORCH_THREADS);
            0 (the default) uses every CPU this process may run on
            (:func:`umlip_wire.cpus.available_cpus`: its affinity and cgroup CPU quota).
        log_level: Python logging level name (UMLIP_LOG_LEVEL).
        tls_cert, tls_key: the server's TLS certificate chain and key, PEM
            (UMLIP_TLS_CERT, UMLIP_TLS_KEY); unset: plaintext.
        tls_client_ca: require client certificates signed by this CA, PEM: mutual TLS
            (UMLIP_TLS_CLIENT_CA).
        checkpoint_sha256: the sha256 the checkpoint must have (UMLIP_CHECKPOINT_SHA256):
            a checkpoint file is hashed and refused before it is loaded (model files are
            pickles), and the checkpoint the model reports after loading (a pretrained
            name resolved by the library) must match too; unset: not checked.
        allow_plaintext: serve plaintext on an address that is not loopback
            (UMLIP_ALLOW_PLAINTEXT); without it such a service needs TLS.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    port_file: Path | None = None
    device: str = "cpu"
    dtype: str = ""
    checkpoint: str = ""
    max_batch_atoms: int = 20_000
    batch_wait_ms: float = 0.0
    max_edges_per_pass: int = 0
    max_queued_atoms: int = 0
    dynamic_batching: bool = True
    grace_period_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_workers: int = 32
    max_concurrent_calls: int = 0
    torch_threads: int = 0
    log_level: str = "INFO"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    allow_plaintext: bool = False
    checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise CalculatorSetupError(f"UMLIP_PORT must be in 0..65535, got {self.port}")
        if self.dtype not in ("", "float32", "float64"):
            raise CalculatorSetupError(
                f"UMLIP_DTYPE must be float32 or float64 (or unset), got {self.dtype!r}"
            )
        for name in ("max_batch_atoms", "max_message_bytes", "max_workers"):
            if getattr(self, name) < 1:
                raise CalculatorSetupError(f"UMLIP_{name.upper()} must be >= 1")
        if self.max_edges_per_pass < 0:
            raise CalculatorSetupError("UMLIP_MAX_EDGES_PER_PASS must be >= 0 (0: by device)")
        if self.max_queued_atoms < 0:
            raise CalculatorSetupError("UMLIP_MAX_QUEUED_ATOMS must be >= 0 (0: 4 x batch)")
        if self.max_concurrent_calls < 0:
            raise CalculatorSetupError("UMLIP_MAX_CONCURRENT_CALLS must be >= 0 (0: 4 x workers)")
        if self.max_concurrent_calls == 0:
            object.__setattr__(self, "max_concurrent_calls", 4 * self.max_workers)
        if self.max_queued_atoms == 0:
            object.__setattr__(self, "max_queued_atoms", 4 * self.max_batch_atoms)
        if self.torch_threads < 0:
            raise CalculatorSetupError("UMLIP_TORCH_THREADS must be >= 0 (0: every CPU)")
        if self.torch_threads == 0:
            object.__setattr__(self, "torch_threads", available_cpus())
        for name in ("batch_wait_ms", "grace_period_s"):
            if getattr(self, name) < 0:
                raise CalculatorSetupError(f"UMLIP_{name.upper()} must be >= 0")

    @property
    def address(self) -> str:
        """``host:port`` to bind (IPv6 hosts bracketed)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Reads ``UMLIP_<FIELD>`` variables; ``overrides`` win over the environment.

        Raises:
            CalculatorSetupError: a variable does not parse or is out of range.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(_PREFIX + spec.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[spec.name] = _parse(spec.type, raw)
            except ValueError as error:
                raise CalculatorSetupError(
                    f"{_PREFIX}{spec.name.upper()}={raw!r} is not a valid {spec.type}"
                ) from error
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _parse(type_name: object, raw: str) -> object:
    text = str(type_name)
    if text == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if text == "int":
        return int(raw)
    if text == "float":
        return float(raw)
    if "Path" in text:
        return Path(raw)
    return raw
