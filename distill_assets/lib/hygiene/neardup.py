"""Near-duplicate rows: MinHash signatures (datasketch) banded into an LSH index kept as numpy
arrays, clustered with union-find.

Each text becomes the set of its word 5-gram shingles (NFKC, case folded, split at blanks),
each shingle a 32-bit polynomial hash of its bytes (so the same on every run and machine), fed
to datasketch's ``MinHash`` (affine32 scheme, which premixes the inputs, and 128 permutations
from a fixed seed). The signature is cut into ``b`` bands of ``r`` rows, with ``b`` and ``r`` by
datasketch's ``_optimal_param`` for the Jaccard threshold, exactly as its ``MinHashLSH`` does, and
two rows that agree on a whole band are near-duplicates. Only one 64-bit hash per band is kept
per row (``b * 8`` bytes, against several KB of Python objects per row in ``MinHashLSH``), so a
million rows take tens of MB; texts are never held.

Clusters are the connected components of the near-duplicate relation; the representative of a
cluster is its first row in the export's own order, which is deterministic.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

NUM_PERM = 128
SHINGLE_WORDS = 5
SEED = 1
_CHUNK = 65536


_P = 0x100000001B3  # odd: invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_MASK32 = np.uint64(0xFFFFFFFF)
_powers = np.ones(1, dtype=np.uint64)
_inverse_powers = np.ones(1, dtype=np.uint64)


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**j and P**-j modulo 2**64 for j < n (grown on demand, kept between calls)."""
    global _powers, _inverse_powers
    if len(_powers) < n:
        size = max(n, 2 * len(_powers))
        powers = np.empty(size, dtype=np.uint64)
        inverse = np.empty(size, dtype=np.uint64)
        p = q = 1
        for j in range(size):
            powers[j], inverse[j] = p, q
            p, q = p * _P % 2**64, q * _P_INV % 2**64
        _powers, _inverse_powers = powers, inverse
    return _powers[:n], _inverse_powers[:n]


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> list[int]:
    """The distinct 32-bit hashes of the text's word ``size``-grams (the whole text when it is
    shorter), sorted. Words are the blank-separated words of the NFKC, case-folded text; each
    shingle's UTF-8 bytes get a polynomial hash modulo 2**64, computed for all shingles at once
    from prefix sums, so the cost does not grow with Python-level work per word."""
    norm = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    if not norm:
        return []
    data = np.frombuffer(norm.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    powers, inverse = _power_tables(len(data) + 1)
    with np.errstate(over="ignore"):
        prefix = np.concatenate((np.zeros(1, dtype=np.uint64), np.cumsum(data * powers[:-1])))
        spaces = np.flatnonzero(data == 32)
        starts = np.concatenate((np.zeros(1, dtype=np.int64), spaces + 1))
        ends = np.concatenate((spaces, np.array([len(data)], dtype=np.int64)))
        width = min(size, len(starts))
        count = len(starts) - width + 1
        first, last = starts[:count], ends[width - 1 : width - 1 + count]
        hashes = (prefix[last] - prefix[first]) * inverse[first]
        hashes ^= hashes >> np.uint64(32)
    return np.unique(hashes & _MASK32).tolist()


class NearDupIndex:
    """Collects band hashes row by row; ``representatives()`` clusters them."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, seed: int = SEED) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
        # one MinHash, cleared for each row: its permutations are generated once
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        self._chunks: list[np.ndarray] = []
        self._current = np.zeros((_CHUNK, self.bands), dtype=np.uint64)
        self._fill = 0
        self._indexed: list[np.ndarray] = []  # per chunk: which rows have a signature
        self._current_indexed = np.zeros(_CHUNK, dtype=bool)
        self.count = 0

    def _band_hashes(self, text: str) -> np.ndarray | None:
        grams = shingle_hashes(text)
        if not grams:
            return None
        minhash = self._minhash
        minhash.clear()
        minhash.update_batch(grams)
        values = minhash.hashvalues
        out = np.empty(self.bands, dtype=np.uint64)
        for band in range(self.bands):
            chunk = values[band * self.rows : (band + 1) * self.rows].tobytes()
            digest = hashlib.blake2b(chunk, digest_size=8, person=band.to_bytes(4, "big"))
            out[band] = int.from_bytes(digest.digest(), "big")
        return out

    def add(self, text: str) -> int:
        """Index one row's text; returns its row number. An empty text is never a duplicate."""
        hashes = self._band_hashes(text)
        if hashes is not None:
            self._current[self._fill] = hashes
            self._current_indexed[self._fill] = True
        self._fill += 1
        self.count += 1
        if self._fill == _CHUNK:
            self._chunks.append(self._current)
            self._indexed.append(self._current_indexed)
            self._current = np.zeros((_CHUNK, self.bands), dtype=np.uint64)
            self._current_indexed = np.zeros(_CHUNK, dtype=bool)
            self._fill = 0
        return self.count - 1

    def part(self) -> tuple[np.ndarray, np.ndarray]:
        """The band hashes and flags of every row so far (a worker's part of an export)."""
        table = np.concatenate([*self._chunks, self._current[: self._fill]])
        indexed = np.concatenate([*self._indexed, self._current_indexed[: self._fill]])
        return table, indexed

    def absorb(self, part: tuple[np.ndarray, np.ndarray]) -> None:
        """Append another index's rows (made over earlier rows of the same export)."""
        table, indexed = part
        if not len(table):
            return
        assert self._fill == 0, "absorb before adding rows"
        self._chunks.append(table)
        self._indexed.append(indexed)
        self.count += len(table)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks) + self._current.nbytes

    def representatives(self) -> np.ndarray:
        """For each row, the row number of its cluster's representative (itself when unique)."""
        table = np.concatenate([*self._chunks, self._current[: self._fill]])
        indexed = np.concatenate([*self._indexed, self._current_indexed[: self._fill]])
        parent = np.arange(self.count, dtype=np.int64)

        def find(i: int) -> int:
            root = i
            while parent[root] != root:
                root = parent[root]
            while parent[i] != root:
                parent[i], i = root, parent[i]
            return root

        rows = np.flatnonzero(indexed)
        for band in range(self.bands):
            column = table[rows, band]
            order = np.argsort(column, kind="stable")
            ordered = column[order]
            starts = np.flatnonzero(np.diff(ordered) != 0) + 1
            bounds = np.concatenate(([0], starts, [len(ordered)]))
            sizes = np.diff(bounds)
            for group in np.flatnonzero(sizes > 1):
                members = rows[order[bounds[group] : bounds[group + 1]]]
                first = find(int(members[0]))
                for member in members[1:]:
                    other = find(int(member))
                    if other != first:
                        # the smaller row number stays the root: the representative
                        low, high = (first, other) if first < other else (other, first)
                        parent[high] = low
                        first = low
        return np.array([find(i) for i in range(self.count)], dtype=np.int64)
