"""The benchmark driver: plans the work, runs it on Ray actors, streams the tables.

The driver asks every service for its ``GetModelInfo``, skips the materials a model
cannot handle (recording why), sends groups of materials to each service's actor pool
with bounded in-flight work (``ray.wait`` backpressure), writes each material's rows as
soon as its actor yields them (Ray streaming generators), and on a restart skips every
(material, model) row already written. Only service unavailability is retried; a bad
structure is a failed row.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ray
from ase.data import chemical_symbols
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from umlip_orchestrator import __version__
from umlip_orchestrator.actors import ServiceUnavailableError, ServiceWorker
from umlip_orchestrator.client import PotentialClient, ServiceError, ServiceInfo
from umlip_orchestrator.datasets import Material, dataset_sha256, load_dataset
from umlip_orchestrator.records import MaterialResult
from umlip_orchestrator.tables import ResultStore
from umlip_orchestrator.workflow import MaterialOutcome, WorkflowSettings, unfinished_result

logger = logging.getLogger("umlip_orchestrator.runner")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One benchmark run.

    Attributes:
        services: model label -> gRPC target (``host:port`` or ``dns:///name:port``).
        dataset: structures to compute (see :func:`load_dataset`).
        out_dir: where the tables and the manifest go; an existing run there resumes.
        workflow: relaxation, strains and ion mode.
        limit: compute only the first N materials of the dataset.
        actors_per_service: orchestrator processes (Ray actors) per service, each with
            its own requests in flight; more than one when one process cannot keep the
            service busy (a GPU service, several replicas behind one address).
        group_size: materials per actor task; outcomes stream back one by one, and all
            of a task's materials share the actor's continuous batching.
        max_in_flight: tasks queued per actor (backpressure).
        max_task_retries: resubmissions of a task's unfinished materials while its
            service is unavailable.
        unavailable_timeout_s: how long one call keeps retrying a service that does not
            answer before its task fails (then it is resubmitted, up to
            ``max_task_retries`` times; after that its materials are failed rows and
            the other models go on).
        ray_address: join this Ray cluster; None starts a local one.
    """

    services: Mapping[str, str]
    dataset: Path
    out_dir: Path
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
    limit: int | None = None
    actors_per_service: int = 1
    group_size: int = 256
    max_in_flight: int = 2
    max_task_retries: int = 3
    unavailable_timeout_s: float = 60.0
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.services:
            raise ValueError("no service given")
        for name, value in (
            ("actors_per_service", self.actors_per_service),
            ("group_size", self.group_size),
            ("max_in_flight", self.max_in_flight),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.unavailable_timeout_s < 0:
            raise ValueError(
                f"unavailable_timeout_s must be >= 0, got {self.unavailable_timeout_s}"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass
class ModelSummary:
    """Counts of one model in one run (this run's new rows plus resumed ones)."""

    model: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    service_failures: int = 0
    seconds: float = 0.0
    unavailable: str | None = None
    actor_nodes: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    """What a run did, per model, and what it could not read."""

    models: dict[str, ModelSummary]
    dataset_problems: list[str]
    out_dir: Path
    wall_time_s: float
    ray_nodes: list[str] = field(default_factory=list)


#: Outcomes that arrive together are written together, at least this often, s.
FLUSH_EVERY_S = 1.0

#: Called after each write: (model, rows just written).
ProgressCallback = Callable[[str, Sequence[MaterialResult]], None]


def unsupported_reason(material: Material, info: ServiceInfo) -> str | None:
    """Why ``info``'s model cannot compute ``material`` (unsupported elements), or None."""
    missing = sorted(set(material.atoms.numbers.tolist()) - info.supported_atomic_numbers)
    if not missing:
        return None
    names = ", ".join(chemical_symbols[z] for z in missing)
    return f"{info.model_name} does not support {names}"


#: Prefix of the error of rows whose service call failed as a whole; a resumed run
#: computes those materials again (a material's own failure is final).
SERVICE_FAILURE = "service call failed"


def finished_keys(store: ResultStore) -> set[tuple[str, str]]:
    """(material_id, model) rows a resumed run must not compute again."""
    table = store.read_results()
    if table.num_rows == 0:
        return set()
    columns = table.select(["material_id", "model", "status", "error"]).to_pylist()
    return {
        (row["material_id"], row["model"])
        for row in columns
        if row["status"] != "failed" or not (row["error"] or "").startswith(SERVICE_FAILURE)
    }


def describe_services(services: Mapping[str, str]) -> tuple[dict[str, ServiceInfo], dict[str, str]]:
    """GetModelInfo of every service; services that cannot be reached, with why.

    Results are keyed by the endpoint's name, except for a service that runs a
    fine-tuned checkpoint: its rows carry the name it reports (``chgnet-ft-<sha8>``), so
    tables keep it apart from the base model whatever the endpoint is called.

    Raises:
        ValueError: two endpoints would write rows under the same model name.
    """
    infos: dict[str, ServiceInfo] = {}
    errors: dict[str, str] = {}
    for name, target in services.items():
        try:
            with PotentialClient(target, max_retries=3, timeout_s=30) as client:
                info = client.info()
        except ServiceError as error:
            errors[name] = str(error)
            continue
        key = info.model_name if info.is_finetuned else name
        if key in infos:
            raise ValueError(f"two services would write rows as model {key!r}")
        infos[key] = info
    return infos, errors


def loopback_node_ip() -> str:
    """The address a local Ray node should use so that its traffic stays on loopback.

    Ray replaces 127.0.0.1 (and "localhost") by the machine's routable address, so a
    local cluster would talk over that interface. 127.0.0.2 is loopback too and Ray
    keeps it; systems where it is not configured (macOS without an alias) get
    127.0.0.1 and Ray's own choice.
    """
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            return "127.0.0.1"
    return "127.0.0.2"


def _init_ray(address: str | None) -> None:
    """Joins ``address`` or starts a local Ray; workers import the installed packages."""
    if ray.is_initialized():
        return
    # Under `uv run`, Ray would otherwise package the working directory and run workers
    # through `uv run`; the orchestrator's environment is already installed.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    options = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(
            address="local",  # always a new cluster, even if one runs on this machine
            include_dashboard=False,
            num_cpus=os.cpu_count() or 2,
            _node_ip_address=loopback_node_ip(),
            **options,
        )


def _worker_nodes() -> list[tuple[str, str]]:
    """(ID, address) of the cluster's live nodes with CPUs, in address order."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    nodes.sort(key=lambda n: (n["NodeManagerAddress"], n["NodeID"]))
    found = [(n["NodeID"], n["NodeManagerAddress"]) for n in nodes]
    return found or [(ray.get_runtime_context().get_node_id(), "local")]


def run_benchmark(
    config: RunConfig,
    progress: ProgressCallback | None = None,
    planned: Callable[[int], None] | None = None,
) -> RunSummary:
    """Runs (or resumes) a benchmark; every finished group is on disk when this returns.

    ``planned`` is told, once the services have answered, how many (material, model)
    rows this run will write (materials x reachable models, less those already done),
    the total that ``progress`` then counts up to.

    Raises:
        DatasetError: the dataset path cannot be read at all.
    """
    started = time.monotonic()
    materials, problems = load_dataset(config.dataset, limit=config.limit)
    store = ResultStore(config.out_dir)
    done = finished_keys(store)
    infos, unreachable = describe_services(config.services)
    summaries = {name: ModelSummary(model=name) for name in [*infos, *unreachable]}
    if planned:
        planned(sum((m.material_id, name) not in done for name in infos for m in materials))
    for name, error in unreachable.items():
        summaries[name].unavailable = error
        logger.error("service %s unavailable, skipped: %s", name, error)
    run_entry = {
        "run_id": uuid.uuid4().hex,
        "umlip_version": __version__,
        "started": datetime.now(UTC).isoformat(),
        "dataset": str(config.dataset),
        "dataset_sha256": dataset_sha256(config.dataset),
        "limit": config.limit,
        "n_materials": len(materials),
        "dataset_problems": [f"{p.source}: {p.message}" for p in problems],
        "workflow": config.workflow.as_dict(),
        "services": {name: info.as_dict() for name, info in infos.items()},
        "unavailable_services": unreachable,
        "ray_address": config.ray_address,
    }
    store.write_manifest(run_entry)
    work: dict[str, list[Material]] = {}
    for name, info in infos.items():
        todo, skipped = [], []
        for material in materials:
            if (material.material_id, name) in done:
                summaries[name].resumed += 1
                continue
            reason = unsupported_reason(material, info)
            if reason is None:
                todo.append(material)
            else:
                skipped.append(
                    unfinished_result(
                        material, name, config.workflow.ion_mode, reason, status="skipped"
                    )
                )
        if skipped:
            store.write(skipped, [])
            summaries[name].skipped += len(skipped)
            if progress:
                progress(name, skipped)
        work[name] = todo
    ray_nodes: list[str] = []
    if any(work.values()):
        _run_on_ray(config, infos, work, store, summaries, progress, ray_nodes)
    store.compact()
    wall_time_s = time.monotonic() - started
    # The same entry again (same run_id), now with its end: reports show the wall time.
    store.write_manifest(
        {**run_entry, "finished": datetime.now(UTC).isoformat(), "wall_time_s": wall_time_s}
    )
    return RunSummary(
        models=summaries,
        dataset_problems=[f"{p.source}: {p.message}" for p in problems],
        out_dir=config.out_dir,
        wall_time_s=wall_time_s,
        ray_nodes=ray_nodes,
    )


@dataclass
class _Task:
    """One streaming actor task: its materials and which of them have come back."""

    model: str
    materials: list[Material]
    actor: int
    attempt: int = 0
    received: set[int] = field(default_factory=set)

    def remaining(self) -> list[Material]:
        return [m for i, m in enumerate(self.materials) if i not in self.received]


def _run_on_ray(
    config: RunConfig,
    infos: Mapping[str, ServiceInfo],
    work: Mapping[str, list[Material]],
    store: ResultStore,
    summaries: dict[str, ModelSummary],
    progress: ProgressCallback | None,
    summary_nodes: list[str],
) -> None:
    """Streams every model's materials through its actor pool; writes each outcome.

    Each actor task carries ``group_size`` materials and yields each material's outcome
    as it completes (a Ray streaming generator); it is written at once. If a task fails
    because the service is unavailable (or its actor died), the materials it has not
    yet returned are submitted again, up to ``max_task_retries`` times.
    """
    _init_ray(config.ray_address)

    nodes = _worker_nodes()
    summary_nodes.extend(address for _, address in nodes)
    placements = itertools.cycle([node_id for node_id, _ in nodes])

    def new_actor(model: str) -> ray.actor.ActorHandle:
        # Round-robin over the cluster's nodes: a service's actors (and the services)
        # are spread over the machines of a multi-node cluster. Hard affinity (a soft
        # one lets Ray keep every actor on the head); an actor whose node is gone fails
        # and its replacement goes to the next node.
        strategy = NodeAffinitySchedulingStrategy(next(placements), soft=False)
        return ServiceWorker.options(scheduling_strategy=strategy).remote(
            infos[model].target, model, config.workflow, config.unavailable_timeout_s
        )

    pools = {m: [new_actor(m) for _ in range(config.actors_per_service)] for m in work}
    for model, pool in pools.items():
        summaries[model].actor_nodes = ray.get([actor.node.remote() for actor in pool])
        logger.info("%s: %d actors on %s", model, len(pool), summaries[model].actor_nodes)
    queues = {
        m: [todo[i : i + config.group_size] for i in range(0, len(todo), config.group_size)]
        for m, todo in work.items()
    }
    in_flight: dict[ray.ObjectRefGenerator, _Task] = {}
    load = {m: [0] * config.actors_per_service for m in work}

    def submit(task: _Task) -> None:
        actor = min(range(config.actors_per_service), key=lambda a: load[task.model][a])
        task.actor = actor
        load[task.model][actor] += 1
        handle = pools[task.model][actor]
        generator = handle.run.options(num_returns="streaming").remote(task.materials)
        in_flight[generator] = task

    def fill() -> None:
        for model, groups in queues.items():
            capacity = config.actors_per_service * config.max_in_flight
            while groups and sum(load[model]) < capacity:
                submit(_Task(model, groups.pop(0), actor=0))

    def record(model: str, outcomes: Sequence[MaterialOutcome]) -> None:
        results = [o.result for o in outcomes]
        store.write(results, [d for o in outcomes for d in o.deformations])
        summary = summaries[model]
        for row in results:
            summary.done += row.status == "ok"
            summary.failed += row.status == "failed"
            summary.seconds += row.seconds_per_material
        if progress:
            progress(model, results)

    def failed(task: _Task, error: BaseException) -> None:
        load[task.model][task.actor] -= 1
        cause = getattr(error, "cause", None) or error
        retryable = isinstance(cause, ServiceUnavailableError | RayActorError)
        remaining = task.remaining()
        if retryable and task.attempt < config.max_task_retries:
            logger.warning("%s: retrying %d materials after: %s", task.model, len(remaining), cause)
            if isinstance(cause, RayActorError):
                pools[task.model][task.actor] = new_actor(task.model)
            submit(_Task(task.model, remaining, actor=0, attempt=task.attempt + 1))
            return
        message = f"{SERVICE_FAILURE}: {cause}"
        rows = [
            unfinished_result(m, task.model, config.workflow.ion_mode, message, status="failed")
            for m in remaining
        ]
        store.write(rows, [])
        summaries[task.model].failed += len(rows)
        summaries[task.model].service_failures += len(rows)
        if progress:
            progress(task.model, rows)

    buffered: dict[str, list[MaterialOutcome]] = {m: [] for m in work}
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        for model, outcomes in buffered.items():
            if outcomes:
                record(model, outcomes)
                outcomes.clear()
        last_flush = time.monotonic()

    fill()
    while in_flight:
        waiting = any(buffered.values())
        ready, _ = ray.wait(
            list(in_flight), num_returns=1, timeout=FLUSH_EVERY_S if waiting else None
        )
        if waiting and (not ready or time.monotonic() - last_flush >= FLUSH_EVERY_S):
            flush()
        if not ready:
            continue
        generator = ready[0]
        task = in_flight[generator]
        try:
            reference = next(generator)
        except StopIteration:
            del in_flight[generator]
            if len(task.received) == len(task.materials):
                load[task.model][task.actor] -= 1
            else:  # ended short without an error: retry what is missing
                short = f"the task returned {len(task.received)} of {len(task.materials)} materials"
                failed(task, ServiceUnavailableError(short))
            fill()
            continue
        try:
            index, outcome = ray.get(reference)
        except (RayTaskError, RayActorError) as error:
            del in_flight[generator]
            failed(task, error)
            fill()
            continue
        task.received.add(index)
        buffered[task.model].append(outcome)
    flush()
