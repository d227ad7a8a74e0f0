"""Whether a crash may have cost the object cache bytes it never flushed.

The worker's cache writes its downloads without fsync: it can always fetch an object again, and
an fsync per object would cost a third of the transfer time. Bytes not yet flushed survive a
killed worker (the kernel still holds them) but not a power loss or a kernel crash. So the cache
is trusted unless the machine has restarted since a run that did not stop cleanly; then every
cached object is dropped, to be fetched (and verified) again.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
from twisted.logger import Logger

from .files import remove_tree

log = Logger()

BOOT_FILE = "boot-id"
CLEAN_FILE = "stopped-cleanly"
# What the cache holds; everything else in its folder (the markers) stays.
CACHED = ("objects", "programs", "bundles", "staging")


def current_boot_id() -> str:
    """An id that changes each time the machine starts."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-{psutil.boot_time():.0f}"


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def may_be_torn(root: Path, boot_id: str) -> bool:
    """True when the last run ended unclean and the machine restarted since."""
    try:
        recorded = (root / BOOT_FILE).read_text().strip()
    except FileNotFoundError:
        return False  # a new cache, or one from before these markers: nothing unflushed known
    return recorded != boot_id and not (root / CLEAN_FILE).exists()


def begin_run(root: Path, boot_id: str) -> bool:
    """Drop the cache if a crash may have torn it, then mark it in use; True if dropped."""
    root.mkdir(parents=True, exist_ok=True)
    dropped = may_be_torn(root, boot_id)
    if dropped:
        log.warn(
            "the machine restarted after the worker stopped uncleanly: its cache may hold "
            "unflushed objects, so it is dropped and will be fetched again"
        )
        for name in CACHED:
            remove_tree(root / name)
    (root / CLEAN_FILE).unlink(missing_ok=True)
    _write_durably(root / BOOT_FILE, boot_id)
    return dropped


def end_run(root: Path) -> None:
    """A clean stop: flush what the cache wrote, then say so."""
    os.sync()
    _write_durably(root / CLEAN_FILE, "")
