"""The driver: plan, keep a bounded number of shards in flight, survive lost actors, finalize.

    plan.resolve + plan.prepare           spec written to the store before any work
    for each shard without a manifest part (ascending):
        actor.sample_shard(spec, k) -> HR ref -> commit_shard(store, spec, k, HR ref)
    finalize: totals + dataset card in the group attrs, consolidated metadata

Backpressure: each ready actor holds at most ``DEPTH`` shards (one sampling, one
queued, so the actor never waits on a commit); the driver holds only object refs
and counters, never images or manifest rows, so its memory is flat in n.

Faults: any actor or object loss (``RayActorError`` and subclasses such as
``ActorDiedError`` / ``ActorUnavailableError``, ``ObjectLostError``, ``NodeDiedError``,
``WorkerCrashedError``) means "shard not done": the shard goes back in the queue and
the actor is killed and replaced (not pinned to any node; shards go only to actors
whose model has loaded, so a replacement that cannot be placed never holds work).
A commit that raises is retried by Ray; one that keeps raising is reported by shard
id, the other shards still commit, and the store stays resumable.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from factory.errors import FactoryError
from factory.pipeline import plan as planning
from factory.pipeline.spec import ClusterConfig, GenerateConfig, RunSpec

DEPTH = 2  # shards per actor in flight
ACTOR_START_TIMEOUT_S = 900.0  # no actor ready for this long while work is pending: give up


@dataclass
class Progress:
    n: int  # samples in the run
    done: int  # samples committed (including those committed by earlier runs)
    generated: int  # samples committed by this run
    shards_failed: int
    shards_retried: int
    elapsed_s: float

    @property
    def samples_per_s(self) -> float:
        return self.generated / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class RunResult:
    store: Path
    n: int
    generated: int  # samples committed by this run
    skipped: int  # samples already committed before this run
    wall_s: float
    workers: int = 0
    status: str = "complete"  # complete | already complete | incomplete
    failed_shards: dict[int, str] = field(default_factory=dict)  # shard -> first line of its error
    deterministic: set[int] = field(default_factory=set)  # failed shards whose error is a FactoryError: a rerun fails again
    retried: int = 0  # shard re-queues after actor/node loss
    stored_bytes: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else 0.0

    def failure_sentence(self) -> str:
        ids = sorted(self.failed_shards)
        first = self.failed_shards[ids[0]]
        listed = ", ".join(map(str, ids[:20])) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        head = f"{len(ids)} shard(s) failed and were not committed (shard ids {listed}; first error: {first})"
        if set(ids) <= self.deterministic:  # e.g. a model that makes NaN: the same inputs fail the same way
            return (f"{head}; the failure is deterministic, so rerunning with the same settings fails again; "
                    f"every other shard is committed and {self.store} stays resumable once the cause is fixed.")
        return f"{head}; every other shard is committed and {self.store} stays resumable: rerun the same command to retry them."


def generate(cfg: GenerateConfig, cluster: ClusterConfig = ClusterConfig(),
             on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Plan (or resume) and run a generate job; returns what happened (see RunResult.status)."""
    t0 = time.perf_counter()
    spec, card = planning.resolve(cfg)
    check_reachable(cluster.address)
    plan = planning.prepare(Path(cfg.out), spec, card, cfg.overwrite)
    spec = plan.spec
    skipped = sum(len(spec.shard_ids(k)) for k in range(spec.num_shards)) - sum(len(spec.shard_ids(k)) for k in plan.todo)
    if plan.complete:
        return RunResult(Path(cfg.out), spec.n, 0, skipped, time.perf_counter() - t0, status="already complete")
    if plan.todo:
        with ray_session(cluster):
            result = _run(Path(cfg.out).resolve(), spec, plan.todo, cluster, on_progress, skipped, t0)
    else:  # every shard committed, the crash came before finalize
        result = RunResult(Path(cfg.out), spec.n, 0, skipped, 0.0)
    if not result.failed_shards:
        from factory.pipeline.finalize import finalize

        result.stored_bytes = finalize(Path(cfg.out))
    else:
        result.status = "incomplete"
    result.store, result.wall_s = Path(cfg.out), time.perf_counter() - t0
    return result


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig):
    """Use the Ray already initialized in this process, else start the embedded local one or join ``address``."""
    import ray

    if ray.is_initialized():
        yield
        return
    restore = _loopback_only() if cluster.address is None else (lambda: None)
    try:
        try:
            if cluster.address is None:  # loopback only, no dashboard; Ray's token auth stays as Ray sets it
                cpus = max(os.cpu_count() or 1, cluster.workers or 0)
                # Keep idle commit-task workers alive next to the sampler actors: by default Ray kills
                # idle workers beyond one per CPU, and the actors alone reach that, so every commit
                # paid a fresh process and its imports (~1-3 s of CPU per shard on 2 cores).
                ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
                         log_to_driver=False, _system_config={"num_workers_soft_limit": cpus + (cluster.workers or cpus)})
            else:
                ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray" if cluster.address is None else f"Ray at {cluster.address}"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FactoryError(f"could not start or join {where}: {first}.") from None
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        restore()


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast, in one sentence, when ``--address host:port`` (or ray://host:port) does not answer:
    Ray itself retries an unreachable GCS for minutes. "auto" and the embedded Ray are not checked."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FactoryError(f"--address must be auto, host:port or ray://host:port, got '{address}'.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise FactoryError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); check --address, "
                           f"or leave it out to run on an embedded local Ray.") from None


def _loopback_only() -> Callable[[], None]:
    """Make the embedded Ray listen on 127.0.0.1 only.

    Ray 2.60 turns ``_node_ip_address="127.0.0.1"`` into the host's routable IP and then
    binds its gRPC servers to all interfaces. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    (the single-machine mode Ray uses on macOS/Windows) the node IP stays 127.0.0.1 and every
    server (GCS, raylet, object manager, workers, agents) binds to loopback. The variable is
    read at import, so it is set in the environment (for the processes Ray spawns) and on
    the already imported constants (for this process). Checked by tests/test_generate.py.
    Returns the function that restores both (so that a later ``--address`` run in the same
    process sees the host's IP again).
    """
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before_env, before_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False

    def restore() -> None:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before_env

    return restore


def _lost_errors() -> tuple[type, ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ObjectLostError, rex.NodeDiedError, rex.WorkerCrashedError)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip(": ")


def _run(store_path: Path, spec: RunSpec, todo: list[int], cluster: ClusterConfig,
         on_progress: Callable[[Progress], None] | None, skipped: int, t0: float) -> RunResult:
    import ray

    from factory.pipeline.actors import start_actor
    from factory.pipeline.tasks import commit_shard, warm_up

    resources = ray.cluster_resources()
    use_gpu = resources.get("GPU", 0) >= 1
    workers = cluster.workers or max(1, int(resources.get("GPU", 0) if use_gpu else resources.get("CPU", 1)))
    lost = _lost_errors()
    commit = commit_shard.options(max_retries=max(0, cluster.commit_attempts - 1), retry_exceptions=True)
    pending = deque(todo)
    actors = [start_actor(spec, use_gpu) for _ in range(workers)]
    for _ in range(min(workers, len(todo))):
        warm_up.remote()  # fire and forget: Ray runs a task whether or not its result is kept
    starting = {w.ready_ref: w for w in actors}
    commits: dict = {}  # commit ref -> (shard, worker)
    losses: Counter = Counter()
    result = RunResult(store_path, spec.n, 0, skipped, 0.0, workers=workers)
    replacements, last_actor_error, idle_since = 0, "", time.monotonic()

    def replace(worker, error: BaseException) -> None:
        nonlocal replacements, last_actor_error
        last_actor_error = _first_line(error)
        if worker.alive:
            worker.alive = False
            ray.kill(worker.handle, no_restart=True)
            if replacements < 3 * workers:
                replacements += 1
                new = start_actor(spec, use_gpu)
                actors.append(new)
                starting[new.ready_ref] = new

    def report() -> None:
        if on_progress is not None:
            on_progress(Progress(spec.n, skipped + result.generated, result.generated, len(result.failed_shards),
                                 result.retried, time.perf_counter() - t0))

    report()
    try:
        while pending or commits:
            for w in actors:
                while w.alive and w.ready and w.shards < DEPTH and pending:
                    k = pending.popleft()
                    hr_ref = w.handle.sample_shard.remote(spec, k)
                    commits[commit.remote(str(store_path), spec, k, hr_ref)] = (k, w)
                    w.shards += 1
            if any(w.alive and w.ready for w in actors) or commits:
                idle_since = time.monotonic()
            elif not starting or time.monotonic() - idle_since > ACTOR_START_TIMEOUT_S:
                why = last_actor_error or f"none could be placed within {ACTOR_START_TIMEOUT_S:.0f} s"
                for k in pending:
                    result.failed_shards[k] = f"no sampler actor is alive ({why})"
                break
            ready, _ = ray.wait(list(commits) + list(starting), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in starting:
                    w = starting.pop(ref)
                    try:
                        w.location, w.ready = ray.get(ref), True
                    except Exception as exc:  # the actor could not start (model missing on that node, ...)
                        replace(w, exc)
                    continue
                k, w = commits.pop(ref)
                w.shards -= 1
                try:
                    result.generated += ray.get(ref)["samples"]
                except lost as exc:
                    if isinstance(exc, ray.exceptions.RayActorError):
                        replace(w, exc)
                    losses[k] += 1
                    if losses[k] > cluster.actor_losses_per_shard:
                        result.failed_shards[k] = f"lost {losses[k]} times ({_first_line(exc)})"
                    else:
                        pending.appendleft(k)
                        result.retried += 1
                except ray.exceptions.RayError as exc:
                    result.failed_shards[k] = _first_line(exc)
                    if isinstance(getattr(exc, "cause", None), FactoryError):
                        result.deterministic.add(k)
            report()
    finally:
        for w in actors:
            with contextlib.suppress(Exception):
                ray.kill(w.handle, no_restart=True)
    return result
