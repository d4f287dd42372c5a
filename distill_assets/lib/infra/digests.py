"""Compact tables of sha256 digests: exact membership and lookup at about 40 bytes an entry.

A Python set or dict of digests (or of the strings they stand for) costs around 90 to 350 bytes
an entry; stages that must remember something about every record of many days keep digests in
numpy arrays instead: sorted 8-byte prefixes to search, and the full digests beside them to
confirm a match.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def digest(text: str) -> bytes:
    """The sha256 digest of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class DigestTable:
    """Digests in the order they were added, searchable by value.

    ``find`` gives, for each digest asked about, the position (in order of addition) of the
    last equal digest added, or -1.
    """

    def __init__(self) -> None:
        self._prefixes = np.empty(0, dtype=np.uint64)
        self._digests = np.empty((0, 32), dtype=np.uint8)
        self._positions = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._positions)

    def save(self, path: Path) -> None:
        """Write the table to ``path`` (an .npy archive) so it can leave memory."""
        with open(path, "wb") as fh:
            for array in (self._prefixes, self._digests, self._positions):
                np.save(fh, array, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> DigestTable:
        table = cls()
        with open(path, "rb") as fh:
            table._prefixes = np.load(fh, allow_pickle=False)
            table._digests = np.load(fh, allow_pickle=False)
            table._positions = np.load(fh, allow_pickle=False)
        return table

    @staticmethod
    def _arrays(digests: list[bytes] | bytes | bytearray) -> tuple[np.ndarray, np.ndarray]:
        joined = digests if isinstance(digests, bytes | bytearray) else b"".join(digests)
        full = np.frombuffer(joined, dtype=np.uint8).reshape(-1, 32)
        return full[:, :8].copy().view(np.uint64).ravel(), full

    def add(self, digests: list[bytes] | bytes | bytearray) -> None:
        """Add digests: a list of them, or one buffer of 32 bytes each."""
        if not digests:
            return
        prefixes, full = self._arrays(digests)
        start = len(self._positions)
        positions = np.arange(start, start + len(full), dtype=np.int64)
        merged = np.concatenate([self._prefixes, prefixes])
        order = np.argsort(merged, kind="stable")
        self._prefixes = merged[order]
        self._digests = np.concatenate([self._digests, full])[order]
        self._positions = np.concatenate([self._positions, positions])[order]

    def find(self, digests: list[bytes] | bytes | bytearray) -> list[int]:
        if not digests:
            return []
        prefixes, full = self._arrays(digests)
        if not len(self._positions):
            return [-1] * len(full)
        lo = np.searchsorted(self._prefixes, prefixes, side="left")
        hi = np.searchsorted(self._prefixes, prefixes, side="right")
        found = np.full(len(full), -1, dtype=np.int64)
        # the usual case, one entry with the prefix: confirmed for all such digests at once
        single = np.flatnonzero(hi - lo == 1)
        same = (self._digests[lo[single]] == full[single]).all(axis=1)
        found[single[same]] = self._positions[lo[single[same]]]
        # a prefix shared by several entries (a repeated digest, or a rare prefix collision)
        for i in np.flatnonzero(hi - lo > 1).tolist():
            equal = np.flatnonzero((self._digests[lo[i] : hi[i]] == full[i]).all(axis=1))
            if len(equal):
                found[i] = self._positions[lo[i] + equal].max()
        return found.tolist()
