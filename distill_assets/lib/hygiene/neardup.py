"""Near-duplicate rows: MinHash signatures computed in batches with numpy, banded into an LSH
index of 64-bit band hashes, clustered with union-find.

Each text becomes the set of its word 5-gram shingles (NFKC, case folded, split at blanks), each
shingle a 32-bit polynomial hash of its bytes (so the same on every run and machine). The set's
signature is datasketch's ``MinHash`` (affine32 scheme) value for value: every hash is premixed
with MurmurHash3's 32-bit finalizer, then ``a_k * h + b_k`` modulo 2**32 for the 128
``(a_k, b_k)`` that datasketch draws from ``numpy.random.RandomState(seed)``, and the minimum
taken. The signature is cut into ``b`` bands of ``r`` rows, ``b`` and ``r`` by datasketch's
``_optimal_param`` for the Jaccard threshold (0.8 gives 9 bands of 13), and two rows that agree on
a whole band are near-duplicates: the decisions of the datasketch implementation this replaces.

What changed is how it is computed: texts are buffered and done a batch at a time (identical
texts once per batch; shingle hashes from one prefix sum over the batch's bytes; one numpy pass
per permutation over all the batch's shingles, only the ``b * r`` permutations the bands use),
and each band is kept as one 64-bit hash of its ``r`` values (a splitmix64 chain), ``b * 8``
bytes per row, in blocks that can spill to a scratch file. ``representatives()`` reads one band
column at a time. Clusters are the connected components of the relation; the representative of
a cluster is its first row in the export's own order, which is deterministic.

Length: the exact batched MinHash (shingling, permutations, bands), the band cache and the
clustering are one estimator, with the measurements that chose each step.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import threading
import unicodedata
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

NUM_PERM = 128
SHINGLE_WORDS = 5
SEED = 1
BATCH_ROWS = 2048  # texts buffered before their signatures are computed ...
BATCH_CHARS = 8 << 20  # ... or this many characters, whichever comes first
_SLICE_BYTES = 1 << 17  # bytes per prefix-sum pass (in cache; bounds the power tables)
_BLOCK_ROWS = 65536  # rows per block of band hashes (the unit that spills)

# --- LSH parameters ------------------------------------------------------------------------


def _false_positive_probability(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    area, _err = quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)
    return float(area)


def _false_negative_probability(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    area, _err = quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)
    return float(area)


def _optimal_param(
    threshold: float, num_perm: int, false_positive_weight: float, false_negative_weight: float
) -> tuple[int, int]:
    """The ``(b, r)`` minimizing the weighted false positive and false negative probabilities.

    Copied from datasketch 2.0 (``datasketch/lsh.py``, MIT License, Copyright (c) 2015 ekzhu),
    so that the bands are exactly those of its ``MinHashLSH``."""
    min_error = float("inf")
    opt = (0, 0)
    for b in range(1, num_perm + 1):
        max_r = int(num_perm / b)
        for r in range(1, max_r + 1):
            fp = _false_positive_probability(threshold, b, r)
            fn = _false_negative_probability(threshold, b, r)
            error = fp * false_positive_weight + fn * false_negative_weight
            if error < min_error:
                min_error = error
                opt = (b, r)
    return opt


# _optimal_param's answer for the default threshold (a test recomputes it): importing scipy to
# integrate costs each export ~0.3 s, more than the index itself on a small corpus
_KNOWN_PARAMS: dict[tuple[float, int], tuple[int, int]] = {(0.8, 128): (9, 13)}


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """Bands and rows per band for a Jaccard threshold, as datasketch's ``MinHashLSH`` picks."""
    known = _KNOWN_PARAMS.get((threshold, num_perm))
    return known if known is not None else _optimal_param(threshold, num_perm, 0.5, 0.5)


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutations: odd ``a`` and any ``b``, both uint32."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


# --- shingles ------------------------------------------------------------------------------

# ASCII upper case to lower case (casefold on ASCII) and every ASCII character str.split()
# splits at to a blank; 0xFF, never part of UTF-8, marks where one text ends
_FOLD = bytes(
    b + 32 if 65 <= b <= 90 else 32 if b in (9, 10, 11, 12, 13, 28, 29, 30, 31) else b
    for b in range(256)
)
_SEPARATOR = 0xFF
# the blanks str.split() knows that stay non-ASCII after NFKC (the others become a space)
_WIDE_BLANKS = re.compile("[\x85\u1680\u2028\u2029]")
_P = 0x100000001B3  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**j and P**-j modulo 2**64 for j < n (grown on demand, kept between calls)."""
    global _powers, _inverse_powers
    if len(_powers) < n:
        size = max(n, 2 * len(_powers))
        powers = np.full(size, _P, dtype=np.uint64)
        inverse = np.full(size, _P_INV, dtype=np.uint64)
        powers[0] = inverse[0] = 1
        _powers, _inverse_powers = np.cumprod(powers), np.cumprod(inverse)
    return _powers[:n], _inverse_powers[:n]


def _fold_run(chunk: bytes) -> bytes:
    """NFKC, case fold and wide blanks to a blank, for one run of non-ASCII characters with the
    ASCII character before it (which a combining mark may compose with)."""
    text = unicodedata.normalize("NFKC", chunk.decode("utf-8", "surrogatepass")).casefold()
    return _WIDE_BLANKS.sub(" ", text).encode("utf-8", "surrogatepass")


# short runs (an arrow, a dash, an accented letter) recur: fold each once
_fold_short_run = functools.lru_cache(maxsize=16384)(_fold_run)


def _fold_non_ascii(joined: bytes) -> bytes:
    """Fold the non-ASCII runs of a batch's joined bytes.

    Only they go through ``unicodedata``: every ASCII character is a normalization boundary (a
    starter that composes with nothing before it) and case folding maps characters one by one,
    so folding each run with the character before it folds the whole text."""
    raw = np.frombuffer(joined, dtype=np.uint8)
    wide = (raw >= 0x80) & (raw != _SEPARATOR)
    edges = np.flatnonzero(wide[1:] != wide[:-1])  # the buffer starts and ends in ASCII
    pieces = []
    done = 0
    for start, end in zip((edges[0::2] + 1).tolist(), (edges[1::2] + 1).tolist(), strict=True):
        pieces.append(joined[done : start - 1])
        fold = _fold_short_run if end - start < 32 else _fold_run
        pieces.append(fold(joined[start - 1 : end]))
        done = end
    pieces.append(joined[done:])
    return b"".join(pieces)


def _shingle_slice(parts: list[bytes], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of a few texts (see ``_shingle_batch``), in one numpy pass over their
    bytes joined by separators."""
    joined = b" \xff ".join([b"", *parts, b""])
    if not joined.isascii():
        joined = _fold_non_ascii(joined)
    raw = np.frombuffer(joined.translate(_FOLD), dtype=np.uint8)
    blank = raw == 32
    repeated = blank[1:] & blank[:-1]
    if repeated.any():  # collapse runs of blanks to one, as " ".join(text.split()) does
        keep = np.empty(len(raw), dtype=bool)
        keep[0] = True
        np.logical_not(repeated, out=keep[1:])
        raw = raw[keep]
        blank = raw == 32
    spaces = np.flatnonzero(blank)  # the buffer starts and ends with a blank
    starts, ends = spaces[:-1] + 1, spaces[1:]  # tokens: the words and the separators
    separator = raw[starts] == _SEPARATOR
    boundaries = np.flatnonzero(separator)  # len(parts) + 1 of them
    words = np.diff(boundaries) - 1
    # a shingle starts at every word whose next size - 1 tokens are words of the same text ...
    window = separator.copy()
    for k in range(1, size):
        window[:-k] |= separator[k:]
    window[len(window) - size + 1 :] = True
    first = np.flatnonzero(~window)
    last = first + (size - 1)
    # ... and a text of fewer words is one shingle
    short = np.flatnonzero((words > 0) & (words < size))
    if len(short):
        first = np.concatenate((first, boundaries[short] + 1))
        last = np.concatenate((last, boundaries[short] + words[short]))
        order = np.argsort(first, kind="stable")
        first, last = first[order], last[order]
    offsets = np.searchsorted(first, boundaries)
    lo, hi = starts[first], ends[last]
    powers, inverse = _power_tables(len(raw) + 1)
    prefix = np.empty(len(raw) + 1, dtype=np.uint64)
    prefix[0] = 0
    prefix[1:] = raw
    with np.errstate(over="ignore"):
        prefix[1:] *= powers[:-1]
        np.cumsum(prefix[1:], out=prefix[1:])
        hashes = (prefix[hi] - prefix[lo]) * inverse[lo]
        hashes ^= hashes >> np.uint64(32)
    return hashes.astype(np.uint32), offsets


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _shingle_batch(parts: list[bytes], size: int = SHINGLE_WORDS) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit hashes of the word ``size``-grams of each text (UTF-8; the whole text when it is
    shorter), row after row, and the ``len(parts) + 1`` offsets where each row's start.

    A shingle's hash is the polynomial hash modulo 2**64 of its UTF-8 bytes (its words joined by
    one blank), folded to 32 bits: the hash the per-row implementation computed, so signatures
    and decisions are unchanged."""
    hashes: list[np.ndarray] = []
    offsets: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    done = 0
    start = 0
    while start < len(parts):
        stop, length = start, 0
        while stop < len(parts) and (stop == start or length + len(parts[stop]) <= _SLICE_BYTES):
            length += len(parts[stop]) + 3
            stop += 1
        slice_hashes, slice_offsets = _shingle_slice(parts[start:stop], size)
        hashes.append(slice_hashes)
        offsets.append(slice_offsets[1:] + done)
        done += len(slice_hashes)
        start = stop
    if not hashes:
        return np.zeros(0, dtype=np.uint32), offsets[0]
    return np.concatenate(hashes), np.concatenate(offsets)


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> list[int]:
    """The distinct 32-bit hashes of the text's word ``size``-grams (the whole text when it is
    shorter), sorted. Words are the blank-separated words of the NFKC, case-folded text."""
    hashes, _offsets = _shingle_batch([_utf8(text)], size)
    return np.unique(hashes).tolist()


# --- signatures and band hashes ------------------------------------------------------------

_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_MIX64 = (
    np.uint64(30),
    np.uint64(0xBF58476D1CE4E5B9),
    np.uint64(27),
    np.uint64(0x94D049BB133111EB),
)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, datasketch's premix (a bijection)."""
    s1, m1, s2, m2 = _FMIX32
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s1
    return h


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, in place (a bijection)."""
    s1, m1, s2, m2 = _MIX64
    h ^= h >> s1
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> np.uint64(31)
    return h


def _signatures(
    hashes: np.ndarray, offsets: np.ndarray, count: int, num_perm: int, seed: int
) -> np.ndarray:
    """The first ``count`` of the ``num_perm`` MinHash values of ``n`` shingle sets, ``(count, n)``
    uint32 (``offsets``: ``n + 1`` of them, no set empty): datasketch's affine32 values."""
    a, b = _permutations(num_perm, seed)
    premixed = _fmix32(hashes)
    permuted = np.empty_like(premixed)
    signature = np.empty((count, len(offsets) - 1), dtype=np.uint32)
    starts = offsets[:-1]
    for k in range(count):  # one pass per permutation over every shingle of the batch
        np.multiply(premixed, a[k], out=permuted)
        permuted += b[k]
        np.minimum.reduceat(permuted, starts, out=signature[k])
    return signature


class Lsh(NamedTuple):
    """What band hashes are computed with: ``bands`` bands of ``rows`` MinHash values each, out
    of ``num_perm`` permutations drawn from ``seed``."""

    bands: int
    rows: int
    num_perm: int
    seed: int


def _band_hashes_of(hashes: np.ndarray, offsets: np.ndarray, lsh: Lsh) -> np.ndarray:
    """``(bands, n)`` 64-bit band hashes of ``n`` shingle sets: each band's ``rows`` values
    chained through splitmix64's finalizer, from a start that differs by band."""
    bands, rows = lsh.bands, lsh.rows
    signature = _signatures(hashes, offsets, bands * rows, lsh.num_perm, lsh.seed)
    per_band = signature.reshape(bands, rows, -1)
    out = np.empty(per_band[:, 0, :].shape, dtype=np.uint64)
    out[:] = (np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))[:, None]
    for row in range(rows):
        out ^= per_band[:, row, :]
        _mix64(out)
    return out


# --- the index -----------------------------------------------------------------------------


class BandCache:
    """Band hashes of texts lately computed, shared by the near-duplicate indexes of one export
    pass: the exports of a task write rows made of the same texts (a run's SFT, KTO and
    preference rows often read alike), so a text seen by one index is not hashed again by the
    next. Keyed by the text and the LSH parameters; at most ``capacity`` texts are kept."""

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._columns: dict[tuple[str, tuple[int, ...]], np.ndarray | None] = {}
        # the exports of a pass finish in two threads (lib/datasets/export_pass.py), both may hash
        self._lock = threading.Lock()

    def get(self, text: str, params: tuple[int, ...]) -> np.ndarray | None | bool:
        """The text's band hashes (None: it has no shingle), or False when not known."""
        with self._lock:
            return self._columns.get((text, params), False)

    def put(self, text: str, params: tuple[int, ...], column: np.ndarray | None) -> None:
        with self._lock:
            columns = self._columns
            columns[(text, params)] = column
            while len(columns) > self.capacity:
                del columns[next(iter(columns))]


class NearDupIndex:
    """Collects rows' texts and their band hashes; ``representatives()`` clusters them.

    ``add`` buffers texts and computes a batch's band hashes when ``batch_rows`` texts (or
    ``BATCH_CHARS`` characters) wait, ``representatives`` at the latest. Band hashes are kept in
    blocks of ``_BLOCK_ROWS`` rows; with ``scratch_dir`` every full block is written to a scratch
    file there instead of staying in memory, so memory stays flat in the corpus. ``close()`` (or
    leaving a ``with`` block) removes the scratch file; it is also removed when the index is
    garbage collected. The MinHash permutations are always drawn from ``SEED``."""

    def __init__(
        self,
        threshold: float,
        num_perm: int = NUM_PERM,
        *,
        scratch_dir: Path | None = None,
        batch_rows: int = BATCH_ROWS,
        cache: BandCache | None = None,
    ) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.seed = SEED
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self.batch_rows = max(1, batch_rows)
        self.cache = cache
        self._params = Lsh(self.bands, self.rows, num_perm, SEED)
        self.count = 0
        self._pending: list[str] = []
        self._pending_chars = 0
        self._blocks: list[np.ndarray] = []  # full blocks kept in memory (no scratch_dir)
        self._spilled = 0  # full blocks written to the scratch file
        self._block_rows = _BLOCK_ROWS
        self._block = np.zeros((self.bands, self._block_rows), dtype=np.uint64)
        self._fill = 0
        self._empty: list[np.ndarray] = []  # row numbers of texts without a shingle
        self._scratch: BinaryIO | None = None
        self._scratch_path: Path | None = None
        if scratch_dir is not None:
            fd, path = tempfile.mkstemp(prefix=".neardup.", suffix=".tmp", dir=scratch_dir)
            self._scratch = os.fdopen(fd, "w+b")
            self._scratch_path = Path(path)
        self._finalizer = weakref.finalize(self, _remove, self._scratch, self._scratch_path)

    # --- rows ------------------------------------------------------------------------------

    def add(self, text: str) -> int:
        """Index one row's text; returns its row number. An empty text is never a duplicate."""
        self._pending.append(text)
        self._pending_chars += len(text)
        self.count += 1
        if len(self._pending) >= self.batch_rows or self._pending_chars >= BATCH_CHARS:
            self._flush()
        return self.count - 1

    def add_many(self, texts: Iterable[str]) -> range:
        """Index rows' texts in order; returns their row numbers."""
        first = self.count
        for text in texts:
            self.add(text)
        return range(first, self.count)

    def _band_hashes(self, text: str) -> np.ndarray | None:
        """One text's band hashes (None when it has no shingle)."""
        hashes, offsets = _shingle_batch([_utf8(text)])
        if not len(hashes):
            return None
        return self._hash_bands(hashes, offsets)[:, 0]

    def _hash_bands(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return _band_hashes_of(hashes, offsets, self._params)

    def _flush(self) -> None:
        """Compute the band hashes of the waiting texts, each distinct text once."""
        if not self._pending:
            return
        texts, self._pending, self._pending_chars = self._pending, [], 0
        slots: dict[str, int] = {}
        slot = np.fromiter(
            (slots.setdefault(text, len(slots)) for text in texts), dtype=np.intp, count=len(texts)
        )
        distinct = list(slots)
        table = np.zeros((self.bands, len(distinct)), dtype=np.uint64)
        empty = np.zeros(len(distinct), dtype=bool)
        todo = list(range(len(distinct)))
        if self.cache is not None:
            todo = []
            for number, text in enumerate(distinct):
                known = self.cache.get(text, self._params)
                if known is False:
                    todo.append(number)
                elif known is None:
                    empty[number] = True
                else:
                    table[:, number] = known
        if todo:
            hashes, offsets = _shingle_batch([_utf8(distinct[number]) for number in todo])
            missing = offsets[1:] == offsets[:-1]
            computed = np.zeros((self.bands, len(todo)), dtype=np.uint64)
            if len(hashes):
                filled = np.flatnonzero(~missing)
                starts = np.append(offsets[filled], offsets[-1])
                computed[:, filled] = self._hash_bands(hashes, starts)
            table[:, todo] = computed
            empty[todo] = missing
            if self.cache is not None:
                for column, number in enumerate(todo):
                    value = None if missing[column] else computed[:, column].copy()
                    self.cache.put(distinct[number], self._params, value)
        first_row = self.count - len(texts)
        if empty.any():
            self._empty.append(np.flatnonzero(empty[slot]) + first_row)
        self._store(table[:, slot])

    def _store(self, table: np.ndarray) -> None:
        done = 0
        while done < table.shape[1]:
            take = min(table.shape[1] - done, self._block_rows - self._fill)
            self._block[:, self._fill : self._fill + take] = table[:, done : done + take]
            self._fill += take
            done += take
            if self._fill == self._block_rows:
                if self._scratch is not None:
                    self._scratch.seek(0, os.SEEK_END)  # representatives() may have read
                    self._scratch.write(self._block.tobytes())
                    self._spilled += 1
                else:
                    self._blocks.append(self._block)
                    self._block = np.zeros((self.bands, self._block_rows), dtype=np.uint64)
                self._fill = 0

    # --- worker processes --------------------------------------------------------------------

    def part(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row's band hashes (bands x rows) and the rows without a shingle: what a worker
        process indexed, for the step's process to ``absorb``."""
        self._flush()
        table = np.empty((self.bands, self.count), dtype=np.uint64)
        for band in range(self.bands):
            table[band] = self._column(band)
        empty = np.concatenate(self._empty) if self._empty else np.zeros(0, dtype=np.int64)
        return table, empty

    def absorb(self, part: tuple[np.ndarray, np.ndarray]) -> None:
        """Append another index's rows, made over the rows before any of this one's."""
        table, empty = part
        if not table.shape[1]:
            return
        if self._pending:
            raise ValueError("absorb before adding rows")
        first = self.count
        self.count += table.shape[1]
        if len(empty):
            self._empty.append(empty + first)
        self._store(table)

    @property
    def nbytes(self) -> int:
        """Bytes of band hashes held in memory (spilled blocks excluded)."""
        return sum(block.nbytes for block in self._blocks) + self._block.nbytes

    # --- clustering ------------------------------------------------------------------------

    def _segments(self, band: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, hashes)`` of one band, block by block (spilled blocks read with plain
        reads, not mapped, so the file's pages never count as the process's memory)."""
        row = 0
        if self._spilled:
            assert self._scratch is not None
            self._scratch.flush()
            for block in range(self._spilled):
                hashes = np.empty(self._block_rows, dtype=np.uint64)
                self._scratch.seek((block * self.bands + band) * hashes.nbytes)
                self._scratch.readinto(memoryview(hashes).cast("B"))
                yield row, hashes
                row += self._block_rows
        for full in self._blocks:
            yield row, full[band]
            row += self._block_rows
        yield row, self._block[band, : self._fill]

    def _column(self, band: int) -> np.ndarray:
        column = np.empty(self.count, dtype=np.uint64)
        for row, hashes in self._segments(band):
            column[row : row + len(hashes)] = hashes
        return column

    def _band_edges(self, band: int, empty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (first row of a group, another row of it) of rows sharing this band's hash."""
        column = self._column(band)
        column.sort()
        shared = np.unique(column[1:][column[1:] == column[:-1]])
        del column
        if not len(shared):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        members, values = [], []
        for row, hashes in self._segments(band):
            at = np.minimum(np.searchsorted(shared, hashes), len(shared) - 1)
            hit = np.flatnonzero(shared[at] == hashes)
            members.append(hit + row)
            values.append(hashes[hit])
        member, value = np.concatenate(members), np.concatenate(values)
        keep = ~empty[member]
        member, value = member[keep], value[keep]
        order = np.lexsort((member, value))
        member, value = member[order], value[order]
        opens = np.ones(len(value), dtype=bool)
        opens[1:] = value[1:] != value[:-1]
        heads = member[opens][np.cumsum(opens) - 1]
        return heads[~opens], member[~opens]

    def representatives(self) -> np.ndarray:
        """For each row, the row number of its cluster's representative (itself when unique)."""
        self._flush()
        parent = np.arange(self.count, dtype=np.int64)
        empty = np.zeros(self.count, dtype=bool)
        for rows in self._empty:
            empty[rows] = True
        for band in range(self.bands):
            _union(parent, *self._band_edges(band, empty))
        return parent

    def close(self) -> None:
        """Remove the scratch file (the index cannot be used after)."""
        self._finalizer()
        self._blocks.clear()

    def __enter__(self) -> NearDupIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove(scratch: BinaryIO | None, path: Path | None) -> None:
    if scratch is not None:
        scratch.close()
    if path is not None:
        path.unlink(missing_ok=True)


def _compress(parent: np.ndarray) -> None:
    """Point every row at its root (pointer jumping)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Join the components of each ``u[i]`` and ``v[i]``; a root always points to a smaller row,
    so every component's root is its first row, and ``parent`` ends fully compressed."""
    while len(u):
        _compress(parent)
        root_u, root_v = parent[u], parent[v]
        apart = root_u != root_v
        u, v, root_u, root_v = u[apart], v[apart], root_u[apart], root_v[apart]
        np.minimum.at(parent, np.maximum(root_u, root_v), np.minimum(root_u, root_v))
    _compress(parent)
