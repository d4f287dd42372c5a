"""Where outputs live: a local directory, or any fsspec URL (s3://, gs://, file://, memory://).

The library writes with local atomic renames and reads by byte offset, so it always works on a
local directory. When the configured output is a URL, each Dagster step works in a fresh local
work directory: it pulls the files its stage reads from the store (each checked against the
sha256 the output ledger recorded), runs, then pushes every file it wrote, reading each upload
back and checking its sha256. Pulled files come from a local mirror of the store, so a machine
downloads each version of a file once and steps only hard-link it. Report files shared between
steps (ledger, run index, the run's summary) are refreshed and pushed under a lock kept in the
store itself, so parallel steps on different machines never lose one another's updates.

Stores have no symbolic links, so the ``exports`` link of a local output
(lib/publishing/versions.py) is
kept as a pointer file, ``reports/published.json``, swapped under the lock; a step recreates
the link in its work directory, and publishing also copies the published version to
``exports/`` in the store, so readers find the datasets at the usual paths.

A plain local path (no ``scheme://``) skips all of this: the step works in the output directory
itself, with no copies and no overhead.

Length: the local and the fsspec stores and a step's work directory implement one protocol
(pull, push, verify), read as a whole.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from distill_assets.lib import constants as C
from distill_assets.lib.infra.io import write_bytes_atomic

_CHUNK = 1 << 20
_LOCK_DIR = f"{C.REPORTS_DIR}/.locks"
_LEDGER = f"{C.REPORTS_DIR}/ledger.json"


class StorageError(Exception):
    """A transfer between the local work directory and the store failed verification."""


def is_remote(location: str) -> bool:
    """True for a URL with a scheme (``s3://...``, ``file://...``); False for a plain path."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.isidentifier()


def default_staging_dir(url: str, environ: Mapping[str, str]) -> Path:
    """Local mirror for ``url``: $DISTILL_STAGING_DIR, else $XDG_CACHE_HOME or ~/.cache, then
    distill/<hash of url>; ``environ`` is the caller's environment (read at the edge)."""
    configured = environ.get(C.ENV_STAGING_DIR)
    if configured:
        return Path(configured)
    cache = Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "distill" / hashlib.sha256(url.encode()).hexdigest()[:16]


def shared_reports(run_id: str) -> Callable[[str], bool]:
    """Report files that steps rewrite in turn (the ledger, the run index, the run lock, the
    published pointer, this run's reports): refreshed from the store before each update."""
    top = C.REPORTS_DIR + "/"
    mine = f"{C.REPORTS_DIR}/{run_id}/"

    def shared(relpath: str) -> bool:
        return (relpath.startswith(top) and "/" not in relpath[len(top) :]) or relpath.startswith(
            mine
        )

    return shared


def _hash_stream(fh: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _matches(relpath: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(relpath, pattern) for pattern in patterns)


@dataclass
class RemoteStore:
    """An fsspec filesystem rooted at a URL, with a local mirror of the files pulled from it."""

    url: str
    mirror: Path
    fs: Any = field(repr=False)
    base: str = ""

    @classmethod
    def open(cls, url: str, staging_dir: Path | None = None) -> RemoteStore:
        from fsspec.core import url_to_fs

        fs, base = url_to_fs(url)
        staging = staging_dir or default_staging_dir(url, {})
        store = cls(url=url, mirror=staging / "mirror", fs=fs, base=base.rstrip("/"))
        store.mirror.mkdir(parents=True, exist_ok=True)
        return store

    def _remote(self, relpath: str) -> str:
        return f"{self.base}/{relpath}"

    def _is_local_fs(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))

    def listing(self, patterns: Iterable[str]) -> dict[str, int]:
        """relpath -> size of every stored file matching ``patterns`` (lock files excluded)."""
        patterns = tuple(patterns)
        tops = sorted({pattern.split("/", 1)[0] for pattern in patterns})
        found: dict[str, int] = {}
        for top in tops:
            root = self._remote(top)
            if not self.fs.exists(root):
                continue
            for name, info in self.fs.find(root, detail=True).items():
                if info.get("type", "file") != "file":
                    continue
                relpath = name[len(self.base) :].lstrip("/")
                if relpath.startswith(_LOCK_DIR + "/") or not _matches(relpath, patterns):
                    continue
                found[relpath] = int(info["size"])
        return found

    def ledger(self) -> dict[str, dict[str, Any]]:
        """The store's output ledger by stored path (a versioned export lives under its root)."""
        path = self._remote(_LEDGER)
        if not self.fs.exists(path):
            return {}
        return {
            f"{entry['root']}/{logical}" if entry.get("root") else logical: entry
            for logical, entry in orjson.loads(self.fs.cat_file(path)).items()
        }

    def remove(self, relpath: str) -> None:
        target = self._remote(relpath)
        if self.fs.exists(target):
            self.fs.rm(target, recursive=True)

    def copy_tree(self, source: str, target: str) -> int:
        """Make ``target`` hold exactly the files of ``source`` (server-side copies)."""
        wanted = {
            name[len(self._remote(source)) :].lstrip("/")
            for name in (
                self.fs.find(self._remote(source)) if self.fs.exists(self._remote(source)) else []
            )
        }
        present = {
            name[len(self._remote(target)) :].lstrip("/")
            for name in (
                self.fs.find(self._remote(target)) if self.fs.exists(self._remote(target)) else []
            )
        }
        for rel in sorted(wanted):
            self.fs.makedirs(self._remote(f"{target}/{rel}").rsplit("/", 1)[0], exist_ok=True)
            self.fs.copy(self._remote(f"{source}/{rel}"), self._remote(f"{target}/{rel}"))
        for rel in sorted(present - wanted):
            self.fs.rm_file(self._remote(f"{target}/{rel}"))
        return len(wanted)

    def version_ids(self) -> list[str]:
        base = self._remote(C.VERSIONS_DIR)
        if not self.fs.exists(base):
            return []
        return sorted(
            name.rstrip("/").rsplit("/", 1)[-1]
            for name in self.fs.ls(base, detail=False)
            if self.fs.isdir(name)
        )

    def fetch(self, relpath: str, size: int, known: dict[str, Any] | None, refresh: bool) -> Path:
        """The mirror copy of ``relpath``, downloaded only when the mirror lacks this version.

        ``known`` is the ledger entry for the file: the download must have its sha256, and the
        copy then takes the ledger's mtime so the library's size+mtime fast path recognises it.
        """
        local = self.mirror / relpath
        if local.exists() and not refresh:
            stat = local.stat()
            if known is None and stat.st_size == size:
                return local
            if (
                known is not None
                and stat.st_size == known["bytes"] == size
                and stat.st_mtime_ns == known["mtime_ns"]
            ):
                return local
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.parent / f".{local.name}.{uuid.uuid4().hex}.pull"
        try:
            digest = hashlib.sha256()
            got = 0
            with self.fs.open(self._remote(relpath), "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    got += len(chunk)
                    dst.write(chunk)
            if known is not None and digest.hexdigest() != known["sha256"]:
                raise StorageError(
                    f"{self.url}/{relpath}: sha256 {digest.hexdigest()[:16]} differs from the "
                    f"ledger's {known['sha256'][:16]} (changed outside distill?)"
                )
            if known is not None:
                os.utime(tmp, ns=(known["mtime_ns"], known["mtime_ns"]))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        return local

    def upload(self, local: Path, relpath: str) -> str:
        """Upload ``local`` to ``relpath`` and return its sha256, checked by reading it back."""
        with open(local, "rb") as fh:
            expected, size = _hash_stream(fh)
        target = self._remote(relpath)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if self._is_local_fs():
            # a local-backed store renames into place, like the library does
            tmp = f"{target.rsplit('/', 1)[0]}/.{relpath.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}"
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, target)
        else:
            self.fs.put_file(str(local), target)
        with self.fs.open(target, "rb") as fh:
            stored, stored_size = _hash_stream(fh)
        if stored != expected or stored_size != size:
            raise StorageError(
                f"{self.url}/{relpath}: upload verification failed (sha256 {stored[:16]} != "
                f"{expected[:16]})"
            )
        return stored

    def adopt(self, local: Path, relpath: str) -> None:
        """Make a file this machine just pushed the mirror's copy (a hard link, no copy)."""
        target = self.mirror / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.adopt"
        try:
            os.link(local, tmp)
        except OSError:
            shutil.copy2(local, tmp)
        os.replace(tmp, target)

    @contextmanager
    def lock(self, ttl_s: float = 300.0, timeout_s: float = 600.0) -> Iterator[None]:
        """Mutual exclusion through the store: hold it while no other holder's entry is listed.

        Each contender writes a uniquely named entry, then lists the lock folder; it holds the
        lock only when its entry is the only one, otherwise it removes its entry and retries
        after a random pause. On a store with read-after-write and list-after-write
        consistency (local files, S3, GCS, Azure) two contenders cannot both see themselves
        alone. Entries older than ``ttl_s`` (a crashed holder) are removed.
        """
        folder = self._remote(_LOCK_DIR)
        self.fs.makedirs(folder, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        pause = 0.01
        while True:
            mine = f"{folder}/{time.time_ns():020d}-{uuid.uuid4().hex}"
            self.fs.pipe_file(mine, b"")
            others = []
            for name in self.fs.ls(folder, detail=False):
                name = name.rstrip("/")
                if name == mine:
                    continue
                stamp = name.rsplit("/", 1)[-1].split("-", 1)[0]
                if stamp.isdigit() and time.time_ns() - int(stamp) > ttl_s * 1e9:
                    self.fs.rm_file(name)
                    continue
                others.append(name)
            if not others:
                break
            self.fs.rm_file(mine)
            if time.monotonic() > deadline:
                raise StorageError(f"{self.url}: could not take the reports lock in {timeout_s}s")
            time.sleep(pause * (1 + uuid.uuid4().int % 100 / 100))
            pause = min(pause * 2, 0.5)
        try:
            yield
        finally:
            self.fs.rm_file(mine)


class Workspace:
    """The local directory one step works in; for a remote store, a synced private copy."""

    def __init__(self, root: Path, store: RemoteStore | None = None) -> None:
        self.root = root
        self.store = store
        self._pulled: dict[str, int] = {}  # relpath -> inode as linked in
        self._pushed: set[tuple[str, int, int]] = set()
        self._published: str | None = None  # the version the exports link points at

    @property
    def remote(self) -> bool:
        return self.store is not None

    def location_of(self, path: Path) -> str:
        """Where a file of the root lives for the user: its local path, or its URL."""
        if self.store is None:
            return str(path)
        return f"{self.store.url.rstrip('/')}/{path.relative_to(self.root).as_posix()}"

    def pull(
        self, patterns: Sequence[str], refresh: Callable[[str], bool] = lambda _path: False
    ) -> int:
        """Link the store's current version of every file matching ``patterns`` into the root.

        Files ``refresh`` accepts are downloaded even when the mirror looks current (shared
        report files another step may have rewritten with the same size). Returns the number
        of files pulled.
        """
        if self.store is None:
            return 0
        ledger = self.store.ledger()
        listing = self.store.listing(patterns)
        for relpath, size in sorted(listing.items()):
            known = ledger.get(relpath)
            if known is not None and known["bytes"] != size:
                raise StorageError(
                    f"{self.store.url}/{relpath}: {size} bytes stored, the ledger says "
                    f"{known['bytes']} (changed outside distill?)"
                )
            source = self.store.fetch(relpath, size, known, refresh(relpath))
            target = self.root / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.link"
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copy2(source, tmp)
            os.replace(tmp, target)
            self._pulled[relpath] = target.stat().st_ino
        # a file pulled earlier in this step and removed from the store since (a released run
        # lock) goes here too
        patterns = tuple(patterns)
        for relpath in [p for p in self._pulled if p not in listing and _matches(p, patterns)]:
            (self.root / relpath).unlink(missing_ok=True)
            del self._pulled[relpath]
        return len(listing)

    def changed(self, under_reports: bool) -> list[str]:
        """Files written in the root since they were pulled (or new), reports or data."""
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith("."):
                    continue  # temporary files and the local reports lock
                path = Path(dirpath) / name
                if path.is_symlink():
                    continue
                relpath = path.relative_to(self.root).as_posix()
                if relpath.startswith(C.REPORTS_DIR + "/") != under_reports:
                    continue
                stat = path.stat()
                if self._pulled.get(relpath) == stat.st_ino:
                    continue
                if (relpath, stat.st_ino, stat.st_mtime_ns) in self._pushed:
                    continue
                found.append(relpath)
        return sorted(found)

    def push(self, relpaths: Iterable[str]) -> int:
        """Upload ``relpaths`` (sha256 verified) and keep them as the mirror's copies."""
        if self.store is None:
            return 0
        count = 0
        for relpath in relpaths:
            local = self.root / relpath
            self.store.upload(local, relpath)
            self.store.adopt(local, relpath)
            stat = local.stat()
            self._pushed.add((relpath, stat.st_ino, stat.st_mtime_ns))
            count += 1
        return count

    def push_data(self) -> int:
        """Upload every data file this step wrote (everything outside reports/)."""
        return self.push(self.changed(under_reports=False))

    @contextmanager
    def reports(self, run_id: str) -> Iterator[None]:
        """Hold the store's lock, refresh the shared report files, and push what changed: new
        report files, the exports pointer when a publish moved the link, and removals (a
        released run lock)."""
        if self.store is None:
            yield
            return
        with self.store.lock():
            self.pull((f"{C.REPORTS_DIR}/*",), refresh=shared_reports(run_id))
            reports_before = {p for p in self._pulled if p.startswith(C.REPORTS_DIR + "/")}
            yield
            self._note_published()
            self.push(self.changed(under_reports=True))
            for relpath in sorted(reports_before):
                if not (self.root / relpath).exists():
                    self.store.remove(relpath)
                    del self._pulled[relpath]
            if self._published is not None:
                self._mirror_published()

    # --- versioned exports (lib/publishing/versions.py)
    # ----------------------------------------------

    def pull_versions(self, run_id: str) -> None:
        """Pull the published version and this run's version, and link ``exports`` locally."""
        if self.store is None:
            return
        self._link_published()
        patterns = [f"{C.VERSIONS_DIR}/{run_id}/*"]
        if self._published_target():
            patterns.append(f"{self._published_target()}/*")
        self.pull(patterns)

    def _published_target(self) -> str | None:
        pointer = self.root / C.PUBLISHED_POINTER_PATH
        if not pointer.exists():
            return None
        return str(orjson.loads(pointer.read_bytes())["target"])

    def _link_published(self) -> None:
        target = self._published_target()
        link = self.root / C.EXPORTS_DIR
        if target is None or (link.is_symlink() and os.readlink(link) == target):
            return
        if link.is_symlink():
            link.unlink()
        os.symlink(target, link)

    def _note_published(self) -> None:
        """After a publish swapped the local link, point the store's pointer at it too."""
        link = self.root / C.EXPORTS_DIR
        if not link.is_symlink():
            return
        target = os.readlink(link)
        if target != self._published_target():
            # a new file, never a write into the pulled one (it is a hard link to the mirror)
            write_bytes_atomic(
                self.root / C.PUBLISHED_POINTER_PATH, orjson.dumps({"target": target}) + b"\n"
            )
            self._published = target

    def _mirror_published(self) -> None:
        """Copy the newly published version to ``exports/`` and drop versions no longer kept."""
        assert self.store is not None and self._published is not None
        self.store.copy_tree(self._published, C.EXPORTS_DIR)
        published_run = self._published.split("/")[1]
        order = {run: n for n, run in enumerate(_run_order(self.root))}
        versions = sorted(self.store.version_ids(), key=lambda v: order.get(v, -1))
        for old in versions[: -C.VERSIONS_KEPT]:
            if old != published_run:
                self.store.remove(f"{C.VERSIONS_DIR}/{old}")
        self._published = None


def _run_order(root: Path) -> list[str]:
    """Run ids in the order the run index first lists them."""
    index = root / C.RUN_INDEX_PATH
    seen: dict[str, None] = {}
    if index.exists():
        for line in index.read_bytes().splitlines():
            if line.strip():
                seen.setdefault(orjson.loads(line)["run_id"], None)
    return list(seen)


@dataclass(frozen=True)
class OutputLocation:
    """The configured output: a local directory, or a URL with its local staging directory."""

    location: str
    staging_dir: Path | None = None

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    def store(self) -> RemoteStore:
        return RemoteStore.open(self.location, self.staging_dir)

    @contextmanager
    def workspace(self, local_root: Path | None, patterns: Iterable[str]) -> Iterator[Workspace]:
        """A step's working directory with ``patterns`` and the reports pulled into it.

        For a local output this is ``local_root`` itself. For a URL it is a new directory under
        the staging directory, removed when the step ends (its pushed files stay in the mirror).
        """
        if not self.remote:
            assert local_root is not None
            yield Workspace(local_root)
            return
        store = self.store()
        work = store.mirror.parent / "steps" / uuid.uuid4().hex
        work.mkdir(parents=True)
        try:
            workspace = Workspace(work, store)
            workspace.pull((*patterns, f"{C.REPORTS_DIR}/*"))
            yield workspace
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def view(self, patterns: Iterable[str]) -> Path:
        """A local directory holding the store's current files matching ``patterns``."""
        if not self.remote:
            return Path(self.location)
        store = self.store()
        ledger = store.ledger()
        for relpath, size in store.listing(patterns).items():
            store.fetch(relpath, size, ledger.get(relpath), refresh=True)
        return store.mirror
