"""The driver: plan, hold the store's lease, keep a bounded number of shards in flight on an elastic
pool of structure actors, survive lost actors and nodes, finalize.

    plan.resolve, plan.inspect            refusals and "nothing to do" before any cluster is joined
    ray_session                           the embedded Ray, or a cluster joined in bounded time
    Lease(store).acquire                  one writer per store; heartbeat; every commit checks its run id
    plan.prepare                          spec written to the store before any work
    for each shard without a manifest part (ascending):
        actor.make_shard(spec, k) -> HR ref -> commit_shard(store, spec, k, HR ref, run id)
    finalize                              compacted manifest, totals, card, consolidated metadata

Backpressure: each ready actor holds at most ``DEPTH`` shards (one being made, one queued, so the
actor never waits on a commit); the driver holds only object refs, counters and a lazy iterator over
the shards to do, never images or manifest rows, so its memory is flat in n.

Elastic pool: every ``POLL_S`` seconds the pool is sized to the cluster: one actor per GPU (ddpm, when
the cluster has GPUs) else one per CPU, or exactly ``--workers``. Actors start on nodes that join
mid-run; actors on nodes that leave die and are replaced only while the cluster still has room.

Faults: any actor or object loss (``RayActorError`` and subclasses such as ``ActorDiedError`` /
``ActorUnavailableError``, ``ObjectLostError``, ``NodeDiedError``, ``WorkerCrashedError``) means
"shard not done": the shard goes back in the queue and the actor is killed (never pinned to a node;
shards go only to actors whose source has loaded). A commit failing on a transient error is retried
by Ray; one that keeps failing, or fails deterministically (a FactoryError: bad data, a refused
commit), is reported by shard id while the other shards still commit.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from factory.errors import FactoryError, StorageError
from factory.pipeline import plan as planning
from factory.pipeline.cluster import ray_session
from factory.pipeline.spec import ClusterConfig, GenerateConfig
from factory.store import Location, RunSpec, Store
from factory.store.lease import Lease

DEPTH = 2  # shards per actor in flight
POLL_S = 2.0  # seconds between pool-size checks
ACTOR_START_TIMEOUT_S = 900.0  # no actor ready for this long while work is pending: give up


@dataclass
class Progress:
    n: int  # samples in the run
    done: int  # samples committed (including those committed by earlier runs)
    generated: int  # samples committed by this run
    shards_failed: int
    shards_retried: int
    elapsed_s: float
    workers: int = 0  # actors alive now

    @property
    def samples_per_s(self) -> float:
        return self.generated / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class RunResult:
    store: str
    n: int
    generated: int  # samples committed by this run
    skipped: int  # samples already committed before this run
    wall_s: float
    workers: int = 0  # most actors alive at once
    status: str = "complete"  # complete | already complete | incomplete
    failed_shards: dict[int, str] = field(default_factory=dict)  # shard -> first line of its error
    deterministic: set[int] = field(default_factory=set)  # failed shards whose error is a FactoryError: a rerun fails again
    retried: int = 0  # shard re-queues after actor/node loss
    stored_bytes: int = 0
    shards_by_node: Counter = field(default_factory=Counter)  # Ray node id -> shards committed from its actors
    first_commit_s: dict[str, float] = field(default_factory=dict)  # Ray node id -> run time of its first commit

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
    loc = Location.parse(cfg.out)
    action, store = planning.inspect(loc, spec, cfg.overwrite)
    if action is planning.Action.nothing:
        return RunResult(str(loc), spec.n, 0, spec.n, time.perf_counter() - t0, status="already complete")
    finalize_only = action is planning.Action.resume and len(store.listed_shards()) == spec.num_shards
    existed = loc.exists()
    try:
        with contextlib.nullcontext() if finalize_only else ray_session(cluster):
            with Lease(loc, ttl_s=cluster.lease_ttl_s) as lease:
                plan = planning.prepare(loc, spec, card, cfg.overwrite)
                result = execute(loc, plan, cluster, lease, on_progress, t0)
    except BaseException:
        if not existed and loc.local and not loc.exists("zarr.json"):  # nothing was planned: leave no stub behind
            loc.delete_tree("")
        raise
    return result


def execute(loc: Location, plan: planning.Plan, cluster: ClusterConfig, lease: Lease,
            on_progress: Callable[[Progress], None] | None = None, t0: float | None = None) -> RunResult:
    """Make and commit every shard the plan has to do, then finalize; the caller holds ``lease`` (and a
    Ray session when there is work)."""
    t0 = time.perf_counter() if t0 is None else t0
    result = RunResult(str(loc), plan.spec.n, 0, plan.skipped_samples, 0.0)
    if plan.todo_count:
        _run(loc, plan, cluster, lease, on_progress, result, t0)
    if lease.lost:
        raise FactoryError(f"{loc}: this run stopped because {lease.lost}; nothing of it was merged.")
    if result.failed_shards:
        result.status = "incomplete"
    else:
        from factory.pipeline.finalize import finalize

        result.stored_bytes = finalize(Store.open(loc, writable=True))
    result.wall_s = time.perf_counter() - t0
    return result


def _lost_errors() -> tuple[type, ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ObjectLostError, rex.NodeDiedError, rex.WorkerCrashedError)


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip(": ")


def ready_refs(refs: list, timeout_s: float) -> list:
    """Every ref in ``refs`` that is ready, after waiting up to ``timeout_s`` for the first one.

    Not ``ray.wait(refs, num_returns=1)`` alone: among refs that are already ready it returns the same one
    whatever their order (it goes by object id), so a loop that takes one per pass can starve a ref for
    the whole run (measured: a joined node's actor, loaded in 3 s, never got a shard in a 60 s run while
    the other actors' commits kept completing).
    """
    import ray

    if not refs:
        time.sleep(timeout_s)
        return []
    ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
    if not ready:
        return []
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
    return ready


def _targets(spec: RunSpec, cluster: ClusterConfig) -> tuple[bool, int]:
    """(actors use a GPU, how many actors the cluster has room for now)."""
    import ray

    resources = ray.cluster_resources()
    use_gpu = spec.structure_kind == "ddpm" and resources.get("GPU", 0) >= 1
    if cluster.workers:
        return use_gpu, cluster.workers
    return use_gpu, max(1, int(resources.get("GPU", 0) if use_gpu else resources.get("CPU", 1)))


def _run(loc: Location, plan: planning.Plan, cluster: ClusterConfig, lease: Lease,
         on_progress: Callable[[Progress], None] | None, result: RunResult, t0: float) -> None:
    import ray

    from factory.pipeline.actors import source_payload, start_actor
    from factory.pipeline.tasks import commit_shard, warm_up

    spec = plan.spec
    lost = _lost_errors()
    commit = commit_shard.options(max_retries=max(0, cluster.commit_attempts - 1), retry_exceptions=True)
    payload = ray.put(source_payload(spec))  # checkpoint bytes / images: through the object store, no shared disk
    fresh, requeued = plan.todo(), deque()
    actors: list = []
    starting: dict = {}  # ready ref -> worker
    commits: dict = {}  # commit ref -> (shard, worker)
    losses: Counter = Counter()
    state = {"last_error": "", "idle_since": time.monotonic(), "polled": 0.0, "more": True}

    def next_shard() -> int | None:
        if requeued:
            return requeued.popleft()
        k = next(fresh, None)
        state["more"] = k is not None
        return k

    def resize() -> None:
        use_gpu, target = _targets(spec, cluster)
        alive = [w for w in actors if w.alive]
        for _ in range(target - len(alive)):
            w = start_actor(spec, payload, use_gpu)
            actors.append(w)
            starting[w.ready_ref] = w
            warm_up.remote()  # fire and forget: a commit worker starts while the source loads
        result.workers = max(result.workers, len([w for w in actors if w.alive]))
        state["polled"] = time.monotonic()

    def retire(worker, error: BaseException) -> None:
        state["last_error"] = _first_line(error)
        if worker.alive:
            worker.alive = False
            ray.kill(worker.handle, no_restart=True)

    def report() -> None:
        if on_progress is not None:
            on_progress(Progress(spec.n, result.skipped + result.generated, result.generated, len(result.failed_shards),
                                 result.retried, time.perf_counter() - t0, sum(w.alive and w.ready for w in actors)))

    resize()
    report()
    try:
        while (state["more"] or requeued or commits) and not lease.lost:
            for w in actors:
                while w.alive and w.ready and w.shards < DEPTH:
                    k = next_shard()
                    if k is None:
                        break
                    made = w.handle.make_shard.remote(spec, k)
                    commits[commit.remote(loc.url, spec, k, made, lease.run_id)] = (k, w)
                    w.shards += 1
            if not (state["more"] or requeued or commits):
                break
            if any(w.alive and w.ready for w in actors) or commits:
                state["idle_since"] = time.monotonic()
            elif not starting or time.monotonic() - state["idle_since"] > ACTOR_START_TIMEOUT_S:
                why = state["last_error"] or f"none could be placed within {ACTOR_START_TIMEOUT_S:.0f} s"
                for k in list(requeued) + list(fresh):
                    result.failed_shards[k] = f"no structure actor is alive ({why})"
                break
            if time.monotonic() - state["polled"] > POLL_S:
                resize()
            for ref in ready_refs(list(starting) + list(commits), timeout_s=1.0):
                if ref in starting:
                    w = starting.pop(ref)
                    try:
                        w.location, w.ready = ray.get(ref), True
                    except Exception as exc:  # the actor could not start (its source failed to load, ...)
                        retire(w, exc)
                    continue
                k, w = commits.pop(ref)
                w.shards -= 1
                try:
                    done = ray.get(ref)
                    result.generated += done["samples"]
                    node = w.location.split("/")[0]
                    result.shards_by_node[node] += 1
                    result.first_commit_s.setdefault(node, time.perf_counter() - t0)
                except lost as exc:
                    if isinstance(exc, ray.exceptions.RayActorError):
                        retire(w, exc)
                    losses[k] += 1
                    if losses[k] > cluster.actor_losses_per_shard:
                        result.failed_shards[k] = f"lost {losses[k]} times ({_first_line(exc)})"
                    else:
                        requeued.appendleft(k)
                        result.retried += 1
                except ray.exceptions.RayError as exc:
                    result.failed_shards[k] = _first_line(exc)
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, FactoryError) and not isinstance(cause, StorageError):  # storage: fixable
                        result.deterministic.add(k)
            report()
    finally:
        for w in actors:
            with contextlib.suppress(Exception):
                ray.kill(w.handle, no_restart=True)
