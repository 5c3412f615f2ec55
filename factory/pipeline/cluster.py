"""Ray sessions: the embedded local Ray (loopback only, no dashboard) or a cluster joined in bounded time.

``ray.init(address=...)`` can wait for a GCS for many minutes (it retries "Failed to connect to GCS"
and survives SIGTERM), for instance when ``auto`` finds the address file of another Ray on the host
that listens only on its loopback. So joining is bounded: the address is resolved the way Ray
resolves it (``RAY_ADDRESS``, then the address file under ``$RAY_TMPDIR/ray``), its GCS port must
accept a TCP connection within ``PROBE_S`` seconds, and ``ray.init`` itself must return within
``ClusterConfig.connect_timeout_s``; otherwise one sentence, and the process exits without waiting
for Ray's background threads (:class:`ClusterUnreachable` carries ``hard_exit``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Callable

from factory.errors import FactoryError
from factory.pipeline.spec import ClusterConfig

PROBE_S = 5.0
_BANNER_LOGGER = "ray._private.authentication.authentication_token_setup"


class ClusterUnreachable(FactoryError):
    """A cluster that did not answer in time; the CLI exits at once (Ray may leave a thread waiting)."""

    hard_exit = True


def resolve_address(address: str) -> str:
    """``auto`` / ``host:port`` / ``ray://host:port`` -> host:port of the GCS, or one sentence."""
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address("auto")
        except ConnectionError:  # Ray's "Could not find any running Ray instance"
            found = None
        except Exception as exc:  # a malformed RAY_ADDRESS or address file
            raise FactoryError(f"--address auto found no usable Ray address ({str(exc).splitlines()[0]}).") from None
        if found is None:
            raise FactoryError("--address auto found no running Ray cluster (none started with `ray start` on this host, "
                               "and RAY_ADDRESS is unset); leave --address out to run on an embedded local Ray.")
        return found
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FactoryError(f"--address must be auto, host:port or ray://host:port, got '{address}'.")
    return f"{host}:{port}"


def check_reachable(address: str | None, timeout_s: float = PROBE_S) -> None:
    """Fail fast, in one sentence, when the cluster's GCS port does not accept a connection."""
    if address is None:
        return
    target = resolve_address(address)
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        found = " (found by --address auto)" if address == "auto" else ""
        raise FactoryError(f"cannot reach a Ray cluster at {target}{found}: {exc.strerror or exc}; check --address, "
                           f"or leave it out to run on an embedded local Ray.") from None


def _init_bounded(timeout_s: float, **kwargs) -> None:
    import ray

    outcome: dict = {}

    def run() -> None:
        try:
            ray.init(**kwargs)
            outcome["ok"] = True
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="factory-ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ClusterUnreachable(f"the Ray cluster at {kwargs.get('address')} did not answer within {timeout_s:.0f} s; "
                                 f"check that it is running and reachable from this host.")
    if "error" in outcome:
        raise outcome["error"]


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig):
    """Use the Ray already initialized in this process, else start the embedded local one or join ``address``."""
    import ray

    check_reachable(cluster.address)  # even when a Ray is already up here: a wrong --address is never ignored
    if ray.is_initialized():
        yield
        return
    restore = _loopback_only() if cluster.address is None else (lambda: None)
    banner = logging.getLogger(_BANNER_LOGGER)
    level = banner.level
    banner.setLevel(logging.ERROR)  # "Token authentication is enabled ..." on every embedded run: auth stays on
    try:
        try:
            if cluster.address is None:  # loopback only, no dashboard; Ray's token auth stays as Ray sets it
                cpus = max(os.cpu_count() or 1, cluster.workers or 0)
                # Keep idle commit-task workers alive next to the actors: by default Ray kills idle
                # workers beyond one per CPU, and the actors alone reach that, so every commit paid a
                # fresh process and its imports (~1-3 s of CPU per shard on 2 cores).
                ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
                         log_to_driver=False, _system_config={"num_workers_soft_limit": cpus + (cluster.workers or cpus)})
            else:
                _init_bounded(cluster.connect_timeout_s, address=cluster.address, configure_logging=False,
                              log_to_driver=False)
        except FactoryError:
            raise
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = "a local Ray" if cluster.address is None else f"Ray at {cluster.address}"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FactoryError(f"could not start or join {where}: {first}.") from None
        finally:
            banner.setLevel(level)
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()
        restore()


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
