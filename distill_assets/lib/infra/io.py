"""File primitives every stage shares: canonical JSON, hashing, atomic JSONL writing, reading.

Every output is written to a temporary file in its own directory, flushed, fsynced and renamed
over the target, so a reader sees either the old file or the new one, never a torn one. Hashes
are taken over the exact bytes written, so a receipt's sha256 is the file's sha256 on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

_FLUSH_BYTES = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Canonical bytes of a JSON value: sorted keys, compact separators, UTF-8."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@dataclass(frozen=True)
class WrittenFile:
    """A file as written: its path relative to a root, sha256, size and line count."""

    path: str
    sha256: str
    bytes: int
    record_count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "record_count": self.record_count,
        }


@dataclass(frozen=True)
class SealedFile:
    """A written and fsynced temporary file waiting to be renamed over its target, so a stage
    can put all its files in place only once every one of them is written."""

    tmp: str
    target: str
    written: WrittenFile

    def commit(self) -> WrittenFile:
        os.replace(self.tmp, self.target)
        _fsync_dir(Path(self.target).parent)
        return self.written

    def abort(self) -> None:
        Path(self.tmp).unlink(missing_ok=True)


class AtomicJsonlWriter:
    """Writes JSON lines to a temporary sibling file and renames it into place on close.

    Hashes and counts the bytes as they are written. On an exception inside the ``with`` block
    the temporary file is removed and the target is left untouched.
    """

    def __init__(self, root: Path, relpath: str) -> None:
        self.root = root
        self.relpath = relpath
        self.target = root / relpath
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
        )
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self.bytes = 0
        self.lines = 0
        self.result: WrittenFile | None = None

    @property
    def position(self) -> int:
        """Byte offset at which the next line will start."""
        return self.bytes + self._buf_bytes

    def write_row(self, row: Any) -> None:
        self.write_raw(orjson.dumps(row) + b"\n")

    def write_raw(self, line: bytes) -> None:
        """Append one already-encoded line, which must end with a newline."""
        self._buf.append(line)
        self._buf_bytes += len(line)
        self.lines += 1
        if self._buf_bytes >= _FLUSH_BYTES:
            self._flush()

    def write_block(self, data: bytes | bytearray, lines: int) -> None:
        """Append ``lines`` already-encoded lines at once (``data`` ends with a newline); a
        block of at least _FLUSH_BYTES is hashed and written as it is, never copied."""
        if not data:
            return
        self.lines += lines
        if len(data) >= _FLUSH_BYTES:
            self._flush()
            self._hash.update(data)
            self._fh.write(data)
            self.bytes += len(data)
            return
        self._buf.append(data)
        self._buf_bytes += len(data)
        if self._buf_bytes >= _FLUSH_BYTES:
            self._flush()

    def append_file(self, path: Path, lines: int) -> None:
        """Append a finished temporary file of ``lines`` lines (a worker's part), read in
        blocks (memory stays bounded), then remove it."""
        with open(path, "rb") as fh:
            while block := fh.read(_FLUSH_BYTES * 16):
                self.write_block(block, 0)
        self.lines += lines
        path.unlink(missing_ok=True)

    def write_rows(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.write_row(row)

    def _flush(self) -> None:
        if not self._buf:
            return
        chunk = b"".join(self._buf)
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.bytes += len(chunk)
        self._buf.clear()
        self._buf_bytes = 0

    def seal(self) -> SealedFile:
        """Finish writing the temporary file (flushed, fsynced, closed) without renaming it into
        place: ``SealedFile.commit`` does that later, possibly in another process."""
        self._flush()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self._tmp, 0o644)
        written = WrittenFile(self.relpath, self._hash.hexdigest(), self.bytes, self.lines)
        return SealedFile(str(self._tmp), str(self.target), written)

    def commit(self) -> WrittenFile:
        self.result = self.seal().commit()
        return self.result

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicJsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_jsonl(root: Path, relpath: str, rows: Iterable[Any]) -> WrittenFile:
    with AtomicJsonlWriter(root, relpath) as writer:
        writer.write_rows(rows)
    assert writer.result is not None
    return writer.result


def concat_files(
    root: Path, parts: list[str], relpath: str, target_root: Path | None = None
) -> WrittenFile:
    """Atomically write ``relpath`` (under ``target_root``, default ``root``) as the
    concatenation of ``parts`` (under ``root``)."""
    with AtomicJsonlWriter(target_root or root, relpath) as writer:
        for part in parts:
            with open(root / part, "rb") as fh:
                for line in fh:
                    writer.write_raw(line if line.endswith(b"\n") else line + b"\n")
    assert writer.result is not None
    return writer.result


def write_bytes_atomic(path: Path, data: bytes) -> str:
    """Atomically replace ``path`` with ``data``; returns the sha256 of the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return sha256_bytes(data)


class AtomicFile:
    """A file written at ``path``, a temporary sibling, and renamed into place on success (for
    writers that open the file themselves, such as Parquet's); on an exception inside the
    ``with`` block the target is left untouched."""

    def __init__(self, root: Path, relpath: str) -> None:
        self.relpath = relpath
        self.target = root / relpath
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.target.name}.", suffix=".tmp", dir=self.target.parent
        )
        os.close(fd)
        self.path = Path(tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.path.unlink(missing_ok=True)
            return
        with open(self.path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(self.path, 0o644)
        os.replace(self.path, self.target)
        _fsync_dir(self.target.parent)

    def written(self, record_count: int) -> WrittenFile:
        """The committed file, hashed from disk."""
        return WrittenFile(
            self.relpath, sha256_file(self.target), self.target.stat().st_size, record_count
        )


def commit_file(source: Path, target: Path, written: WrittenFile) -> WrittenFile:
    """Put a finished temporary file (``written`` describes it) in place: fsynced, made
    readable, renamed over ``target``."""
    with open(source, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(source, 0o644)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    _fsync_dir(target.parent)
    return written


def copy_ranges(
    root: Path, relpath: str, ranges: list[tuple[str, int, int]], lines: int
) -> WrittenFile:
    """Atomically write ``relpath`` (under ``root``) as the byte ranges ``(file, start, end)``
    one after the other, copied by the kernel (``os.copy_file_range``, no pass through Python's
    memory), then hashed once from disk; ``lines`` is how many lines they hold."""
    with AtomicFile(root, relpath) as target:
        with open(target.path, "wb") as out:
            handles: dict[str, Any] = {}
            try:
                for name, start, end in ranges:
                    source = handles.get(name)
                    if source is None:
                        source = handles[name] = open(name, "rb")  # noqa: SIM115
                    offset = start
                    while offset < end:
                        copied = os.copy_file_range(
                            source.fileno(), out.fileno(), end - offset, offset
                        )
                        if copied <= 0:
                            raise OSError(f"could not copy {name} from byte {offset}")
                        offset += copied
            finally:
                for source in handles.values():
                    source.close()
    return target.written(lines)


def write_json_atomic(path: Path, obj: Any) -> str:
    return write_bytes_atomic(
        path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file this project wrote (trusted: a bad line is a bug, not input)."""
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield orjson.loads(raw)


def iter_jsonl_with_offsets(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL file with the byte offset each line starts at."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield offset, orjson.loads(raw)
            offset += len(raw)


class BlankLineError(ValueError):
    """A JSONL file with a blank line: its lines cannot be told apart by offset."""


def jsonl_fields(path: Path, schema: dict[str, Any], piece_bytes: int = 1 << 25) -> Iterator[Any]:
    """The named fields of every line of a JSONL file we wrote (polars' native reader skips
    the others), as frames with each line's byte offset (column ``offset``), read
    ``piece_bytes`` at a time and cut after a line's newline, so memory holds one piece.
    ``BlankLineError`` on a blank line."""
    import io

    import numpy as np
    import polars as pl

    done, rest = 0, b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(piece_bytes)
            data = rest + chunk if rest else chunk
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0:  # one line longer than a piece: read on
                rest = data
                continue
            # (no copy when the piece ends at a line's end, as a file we wrote does)
            body, rest = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
            ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10).astype(np.int64)
            if len(ends) == 0 or ends[-1] != len(body) - 1:  # the last line has no newline
                ends = np.append(ends, len(body) - 1)
            starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1] + 1])
            if ((ends - starts) < 1).any():
                raise BlankLineError(f"{path}: blank lines, its lines cannot be indexed")
            frame = pl.read_ndjson(io.BytesIO(body), schema=schema)
            yield frame.with_columns(offset=pl.Series(starts + done, dtype=pl.Int64))
            done += len(body)
            if not chunk:
                return


def count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
    return count
