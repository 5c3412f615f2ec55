"""Where a store lives: a URL, resolved once to an fsspec filesystem and a root path.

This is the store's one filesystem seam (img2dataset's): every byte a store writes, reads,
lists or deletes goes through a :class:`Location`. Accepted locations:

    pairs.zarr, /data/pairs.zarr, file:///data/pairs.zarr     a local (or shared POSIX) folder
    s3://bucket/pairs.zarr                                    S3 or an S3 API (MinIO, Ceph, moto)
    gs://bucket/pairs.zarr                                    Google Cloud Storage (gcsfs installed)
    memory://pairs.zarr                                       fsspec's in-process memory (tests; one process)

Credentials and endpoints come from the standard environment of each backend (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
IAM roles), so Ray workers on other nodes resolve the same URL the same way.

Why fsspec: zarr-python 3 (``FsspecStore``), pyarrow (``FSSpecHandler``), DuckDB and Ray Data all take
an fsspec filesystem, so one resolved filesystem serves every reader and writer; s3fs implements the
conditional PUT (``If-None-Match: *``) that makes a commit marker exclusive; and its per-request cost
is a small part of a shard's work (benchmarks/dataset.py measures LIST / GET / PUT on the moto S3).

Commit semantics (:meth:`Location.create`): on a local filesystem a temp file is written, fsynced
and hard-linked to its final name, which fails if the name exists (``os.link`` is atomic and never
overwrites); on object storage it is one conditional PUT, atomic there (there is no rename). Both
return False, writing nothing, when the name is taken.
"""
from __future__ import annotations

import errno
import os
import posixpath
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import fsspec

from factory.errors import FactoryError

LOCAL_PROTOCOLS = ("file", "local")


def _message(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def to_url(location: str | os.PathLike) -> str:
    """A location as a URL string: local paths become absolute ``file://`` URLs; others pass through."""
    text = os.fspath(location)
    if not text:
        raise FactoryError("the store location is empty; give a folder path or a URL such as s3://bucket/pairs.zarr.")
    if "://" not in text:
        return "file://" + str(Path(text).expanduser().resolve())
    return text.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A resolved store location: ``fs`` (fsspec filesystem) and ``root`` (the path inside it)."""

    url: str  # normalized URL: file:///abs/path or s3://bucket/key
    protocol: str
    root: str  # path inside fs, no protocol, no trailing slash

    @classmethod
    def parse(cls, location: str | os.PathLike) -> "Location":
        url = to_url(location)
        protocol = urlsplit(url).scheme or "file"
        try:
            fs_class = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            raise FactoryError(f"cannot use {url}: {str(exc).splitlines()[0] if str(exc) else 'unknown protocol'} "
                               f"(install the fsspec backend for '{protocol}://', e.g. s3fs or gcsfs).") from None
        root = fs_class._strip_protocol(url).rstrip("/")
        if protocol in LOCAL_PROTOCOLS:
            root = str(Path(root))
        return cls(url=url, protocol=protocol, root=root)

    @property
    def local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        # No listings cache: commit markers are written by other processes (commit tasks, other nodes), and a
        # cached listing would hide them. Object stores answer LIST in one request per 1000 keys.
        options = {} if self.local or self.protocol == "memory" else {"use_listings_cache": False}
        return fsspec.filesystem(self.protocol, **options)

    def __str__(self) -> str:
        return self.root if self.local else self.url

    # ----------------------------------------------------------------- names
    def path(self, key: str = "") -> str:
        """The filesystem path of a key (a ``/``-separated name relative to the store root)."""
        return posixpath.join(self.root, key) if key else self.root

    def url_of(self, key: str = "") -> str:
        return f"{self.url}/{key}" if key else self.url

    def child(self, key: str) -> "Location":
        return Location(self.url_of(key), self.protocol, self.path(key))

    # ----------------------------------------------------------------- reading
    def exists(self, key: str = "") -> bool:
        return os.path.exists(self.path(key)) if self.local else self.fs.exists(self.path(key))

    def isdir(self, key: str = "") -> bool:
        return os.path.isdir(self.path(key)) if self.local else self.fs.isdir(self.path(key))

    def isfile(self, key: str) -> bool:
        return os.path.isfile(self.path(key)) if self.local else self.fs.isfile(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist, FactoryError on other I/O errors."""
        try:
            if self.local:
                with open(self.path(key), "rb") as f:
                    return f.read()
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FactoryError(f"cannot read {self.url_of(key)}: {_message(exc)}.") from None

    def list(self, key: str = "") -> list[str]:
        """Names (not paths) directly under a folder key, sorted; [] when it does not exist."""
        try:
            if self.local:
                return sorted(os.listdir(self.path(key)))
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path(key), detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def sizes(self, key: str = "") -> dict[str, int]:
        """{key relative to the root: size in bytes} of every file under ``key``."""
        base = self.path(key)
        if self.local:
            out = {}
            for folder, _, files in os.walk(base):
                for name in files:
                    full = os.path.join(folder, name)
                    out[os.path.relpath(full, self.root).replace(os.sep, "/")] = os.path.getsize(full)
            return out
        if not self.fs.exists(base):
            return {}
        found = self.fs.find(base, detail=True)
        return {posixpath.relpath(p, self.root): int(info.get("size") or 0) for p, info in found.items()}

    # ----------------------------------------------------------------- writing
    def makedirs(self, key: str = "") -> None:
        if self.local:
            try:
                os.makedirs(self.path(key), exist_ok=True)
            except OSError as exc:
                raise FactoryError(f"cannot create {self.url_of(key)}: {_message(exc)}.") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace (or create) an object atomically: temp + fsync + rename locally, one PUT on object storage."""
        try:
            if self.local:
                final = self.path(key)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = _temp_name(final)
                try:
                    _write_synced(tmp, data)
                    os.replace(tmp, final)
                finally:
                    _unlink_quietly(tmp)
            else:
                self.fs.pipe_file(self.path(key), data)
        except OSError as exc:
            raise write_error(self.url_of(key), exc) from None

    def create(self, key: str, data: bytes) -> bool:
        """Write an object only if no object has that name: True when written, False when it existed.

        Locally: temp file, fsync, ``os.link`` to the final name (atomic, never overwrites). Object
        storage: one conditional PUT (``If-None-Match: *``; s3fs ``mode="create"``).
        """
        try:
            if self.local:
                final = self.path(key)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                tmp = _temp_name(final)
                try:
                    _write_synced(tmp, data)
                    os.link(tmp, final)
                    return True
                except FileExistsError:
                    return False
                finally:
                    _unlink_quietly(tmp)
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
                return True
            except FileExistsError:
                return False
            except TypeError:  # a backend without conditional writes: check, then write (not atomic)
                if self.fs.exists(self.path(key)):
                    return False
                self.fs.pipe_file(self.path(key), data)
                return True
        except OSError as exc:
            raise write_error(self.url_of(key), exc) from None

    def delete(self, key: str) -> bool:
        """Delete one object (file); True if it existed."""
        try:
            if self.local:
                os.unlink(self.path(key))
            else:
                self.fs.rm_file(self.path(key))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise FactoryError(f"cannot delete {self.url_of(key)}: {_message(exc)}.") from None

    def delete_tree(self, key: str) -> None:
        """Delete a folder key and everything under it (nothing when it does not exist)."""
        if not self.exists(key):
            return
        try:
            if self.local and os.path.isdir(self.path(key)):
                import shutil

                shutil.rmtree(self.path(key))
            elif self.local:
                os.unlink(self.path(key))
            else:
                self.fs.rm(self.path(key), recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise FactoryError(f"cannot delete {self.url_of(key)}: {_message(exc)}.") from None

    # ----------------------------------------------------------------- other libraries
    def zarr_store(self, read_only: bool):
        """A zarr-python 3 store object for this location (LocalStore or FsspecStore)."""
        import zarr

        if self.local:
            return zarr.storage.LocalStore(self.root, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(self.url, read_only=read_only)

    def arrow_filesystem(self):
        """A pyarrow filesystem for :meth:`path` names (local, or fsspec through FSSpecHandler)."""
        import pyarrow.fs as pafs

        if self.local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))


def _temp_name(final: str) -> str:
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex}.tmp")  # hidden: no reader pattern matches it


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_error(url: str, exc: OSError) -> FactoryError:
    if exc.errno == errno.ENOSPC:
        return FactoryError(f"no space left on the device while writing {url}; free space and rerun the same command "
                            f"(committed shards are kept).")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FactoryError(f"cannot write {url}: permission denied or read-only filesystem.")
    return FactoryError(f"cannot write {url}: {_message(exc)}.")
