"""SHA-256 of files, the name of every object."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Big enough that the per-call overhead of hashlib vanishes, small enough to stay out of the way.
BLOCK_SIZE = 1024 * 1024


def sha256_file(path: Path) -> tuple[str, int]:
    """The file's SHA-256 (64 lowercase hex digits) and its size, read in 1 MiB blocks."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(BLOCK_SIZE):
            hasher.update(block)
            size += len(block)
    return hasher.hexdigest(), size
