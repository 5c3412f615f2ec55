"""One writer per store: a lease object with a heartbeat and an expiry, and a run id every commit checks.

    STORE/.factory/lease.json = {"run_id", "host", "pid", "started_at", "renewed_at", "ttl_s"}   (times: unix s)

* :meth:`Lease.acquire` creates the lease exclusively (``Location.create``: ``os.link`` locally, a
  conditional PUT on object storage). If another run's lease exists and is alive, the caller gets one
  sentence naming it. A lease is dead when its holder stopped renewing it for ``ttl_s`` seconds,
  or, on this very host, when its process no longer exists (a ``kill -9``'d writer is replaced at
  once; elsewhere after ``ttl_s``). A dead lease is deleted and the create retried once: if
  another writer won that race, this one is refused.
* The holder renews it every ``ttl_s / 4`` from a daemon thread (:meth:`start_heartbeat`). When a
  renewal finds another run's lease (this one was presumed dead, e.g. after a long pause), ``lost``
  is set and the driver stops.
* :func:`check` is called by every commit, on whichever node it runs, right before it writes its
  commit marker: a commit whose run is no longer the store's run is refused, never merged.

Clocks: expiry compares the reader's clock with the holder's ``renewed_at``; cluster clocks must
agree to well within ``ttl_s`` (NTP does). The window between a commit's check and its marker
write is milliseconds; the marker write itself is exclusive, so a shard is never committed twice.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from factory.errors import FactoryError
from factory.store.layout import LEASE
from factory.store.location import Location

DEFAULT_TTL_S = 60.0


@dataclass(frozen=True)
class LeaseInfo:
    run_id: str
    host: str
    pid: int
    started_at: float
    renewed_at: float
    ttl_s: float

    def alive(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if now - self.renewed_at > self.ttl_s:
            return False
        if self.host == socket.gethostname():
            return _pid_alive(self.pid)
        return True

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return (f"run {self.run_id[:8]} on host {self.host}, pid {self.pid}, lease renewed {now - self.renewed_at:.0f} s ago "
                f"(it expires {self.ttl_s:.0f} s after its last renewal)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def read(loc: Location) -> LeaseInfo | None:
    """The current lease, None when there is none; an unreadable lease counts as dead (expired long ago)."""
    try:
        raw = loc.read_bytes(LEASE)
    except FileNotFoundError:
        return None
    try:
        d = json.loads(raw)
        return LeaseInfo(str(d["run_id"]), str(d["host"]), int(d["pid"]), float(d["started_at"]),
                         float(d["renewed_at"]), float(d["ttl_s"]))
    except (ValueError, KeyError, TypeError):
        return LeaseInfo("unreadable", "", -1, 0.0, 0.0, 0.0)


def check(loc: Location, run_id: str) -> None:
    """Refuse (FactoryError) unless ``run_id`` holds the store's lease: called before every commit marker."""
    current = read(loc)
    if current is None or current.run_id != run_id:
        who = "no writer" if current is None else current.describe()
        raise FactoryError(f"{loc} is no longer written by run {run_id[:8]} (its lease now names {who}); "
                           f"this run's commit was refused so that two runs never mix in one store.")


class Lease:
    """This process's lease on one store (see the module docstring)."""

    def __init__(self, loc: Location, ttl_s: float = DEFAULT_TTL_S, run_id: str | None = None):
        self.loc, self.ttl_s = loc, float(ttl_s)
        self.run_id = run_id or uuid.uuid4().hex
        self.started_at = time.time()
        self.lost: str | None = None  # why the lease was lost (then the run must stop)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        info = LeaseInfo(self.run_id, socket.gethostname(), os.getpid(), self.started_at, time.time(), self.ttl_s)
        return json.dumps(asdict(info)).encode()

    def acquire(self) -> "Lease":
        if self.loc.create(LEASE, self._payload()):
            return self
        current = read(self.loc)
        if current is not None and current.alive():
            raise FactoryError(f"{self.loc} is being written by another factory run ({current.describe()}); "
                               f"wait for it to finish or stop it, then rerun.")
        self.loc.delete(LEASE)  # dead: take it over
        if self.loc.create(LEASE, self._payload()):
            return self
        winner = read(self.loc)
        raise FactoryError(f"{self.loc} was taken over by another factory run at the same moment "
                           f"({winner.describe() if winner else 'unknown'}); rerun once it has finished.")

    def renew(self) -> None:
        current = read(self.loc)
        if current is None or current.run_id != self.run_id:
            self.lost = f"the lease was taken by {current.describe() if current else 'nobody (it was deleted)'}"
            self._stop.set()
            return
        self.loc.write_bytes(LEASE, self._payload())

    def start_heartbeat(self) -> "Lease":
        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 4):
                try:
                    self.renew()
                except FactoryError:  # a transient I/O error: try again at the next beat
                    pass

        self._thread = threading.Thread(target=beat, name="factory-lease", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = read(self.loc)
        if current is not None and current.run_id == self.run_id:
            self.loc.delete(LEASE)

    def __enter__(self) -> "Lease":
        return self.acquire().start_heartbeat()

    def __exit__(self, *exc) -> None:
        self.release()
