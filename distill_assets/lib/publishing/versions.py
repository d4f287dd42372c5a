"""Versioned exports: each run stages its datasets, the publish stage swaps them in at once.

``out/exports`` is a symlink to ``.versions/<run_id>/exports``. A run's version directory starts
as hard links to what is published (so datasets a run does not rebuild carry over unchanged),
its export stages replace files in it by atomic renames (the links to the old version are left
alone), and publishing repoints the symlink with one ``rename``. A reader therefore sees either
the previous set of datasets or the new one, never a mix, whatever happens to the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from distill_assets.lib import constants as C
from distill_assets.lib.infra.layout import published_exports, version_root
from distill_assets.lib.records.receipts import reports_lock

LEGACY = "legacy"


def _migrate_plain_directory(out_root: Path) -> None:
    """An ``exports`` directory from before versioning becomes the ``legacy`` version."""
    link = out_root / C.EXPORTS_DIR
    if link.is_dir() and not link.is_symlink():
        target = version_root(out_root, LEGACY) / C.EXPORTS_DIR
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(link, target)
        _point_exports_at(out_root, target)


def _point_exports_at(out_root: Path, target: Path) -> None:
    link = out_root / C.EXPORTS_DIR
    tmp = out_root / f".{C.EXPORTS_DIR}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, out_root), tmp)
    os.replace(tmp, link)
    fd = os.open(out_root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_version(out_root: Path, run_id: str) -> Path:
    """The run's version root, created on first use from hard links to the published files."""
    root = version_root(out_root, run_id)
    with reports_lock(out_root):
        if (root / C.EXPORTS_DIR).is_dir():
            return root
        _migrate_plain_directory(out_root)
        staging = root / f".{C.EXPORTS_DIR}.seeding"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        current = published_exports(out_root)
        if current is not None and current.is_dir():
            for path in sorted(current.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    dest = staging / path.relative_to(current)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, dest)
                    except OSError:
                        shutil.copy2(path, dest)
        os.replace(staging, root / C.EXPORTS_DIR)
    return root


def publish(out_root: Path, run_id: str) -> Path:
    """Make the run's version the one ``exports`` points at (one atomic rename)."""
    target = version_root(out_root, run_id) / C.EXPORTS_DIR
    with reports_lock(out_root):
        _point_exports_at(out_root, target)
    collect_garbage(out_root)
    return target


def collect_garbage(out_root: Path, keep: int = C.VERSIONS_KEPT) -> list[str]:
    """Remove all but the newest ``keep`` versions; never the published one."""
    base = out_root / C.VERSIONS_DIR
    if not base.is_dir():
        return []
    with reports_lock(out_root):
        current = published_exports(out_root)
        versions = sorted(
            (p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns
        )
        removed = []
        for old in versions[:-keep] if keep else versions:
            if current is not None and current.is_relative_to(old):
                continue
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    return removed
