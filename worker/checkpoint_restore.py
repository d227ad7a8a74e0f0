"""Laying out a saved checkpoint in a new attempt's working directory.

The assignment lists the checkpoints saved by earlier attempts, newest first. The first whose
manifest and chunks can all be fetched whole (every object is checked against its digest on
the way in) is laid out in the checkpoint directory; one that cannot be is set aside and the
next tried, then none: the program starts from scratch. Either way the attempt's log says what
happened, and nothing here stops the attempt from running.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import CancelledError
from twisted.logger import Logger

from xwch.protocol.checkpoints import CheckpointPlan, SavedCheckpoint

from .checkpoint_manifest import BadManifest, Manifest, decode_manifest
from .files import remove_tree

log = Logger()

# Fetches one object into the worker's cache (checked against its digest): its local path.
FetchObject = Callable[[str, int], Awaitable[Path]]
# Runs a blocking call off the reactor.
Blocking = Callable[..., Awaitable[object]]


@dataclass(frozen=True)
class Restored:
    """What a restore gave the attempt: the checkpoint laid out (None: none) and its
    manifest, and one line per checkpoint that could not be used."""

    checkpoint: SavedCheckpoint | None
    manifest: Manifest | None
    notes: tuple[str, ...]


async def restore_checkpoint(
    plan: CheckpointPlan,
    directory: Path,
    fetch: FetchObject,
    blocking: Blocking,
) -> Restored:
    """Lay out in ``directory`` the newest checkpoint of ``plan`` that can be read whole."""
    notes = []
    for saved in plan.restore:
        try:
            manifest = decode_manifest(await _read(fetch, saved.manifest, saved.size, blocking))
            sources = {}
            for digest, size in manifest.chunks().items():
                sources[digest] = await fetch(digest, size)
            await blocking(_lay_out, directory, manifest, sources)
        except CancelledError:
            raise
        except Exception as e:
            # Whatever went wrong (an object lost or corrupt, a manifest that is not one, a
            # full disk), the next checkpoint may do.
            await blocking(_empty, directory)
            why = "its manifest is not valid" if isinstance(e, BadManifest) else str(e)
            notes.append(f"xwch: checkpoint {saved.manifest[:12]} cannot be restored: {why}")
            log.warn(
                "checkpoint {manifest} cannot be restored: {error}",
                manifest=saved.manifest,
                error=e,
            )
            continue
        if notes:
            notes.append(f"xwch: resumed from the checkpoint before it, {saved.manifest[:12]}")
        else:
            notes.append(f"xwch: resumed from checkpoint {saved.manifest[:12]}")
        return Restored(saved, manifest, tuple(notes))
    await blocking(_empty, directory)
    if notes:
        notes.append("xwch: no checkpoint could be restored: starting from scratch")
    return Restored(None, None, tuple(notes))


async def _read(fetch: FetchObject, digest: str, size: int, blocking: Blocking) -> bytes:
    path = await fetch(digest, size)
    content = await blocking(path.read_bytes)
    assert isinstance(content, bytes)
    return content


def _empty(directory: Path) -> None:
    """The checkpoint directory, empty (what a program starting from scratch finds)."""
    if directory.exists():
        remove_tree(directory)
    directory.mkdir(parents=True, exist_ok=True)


def _lay_out(directory: Path, manifest: Manifest, chunks: dict[str, Path]) -> None:
    _empty(directory)
    for folder in manifest.dirs:
        (directory / folder).mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        path = directory / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for chunk in entry.chunks:
                out.write(_chunk_bytes(chunks[chunk.digest], chunk.size))
        os.chmod(path, entry.mode)


def _chunk_bytes(path: Path, size: int) -> bytes:
    content = path.read_bytes()
    if len(content) != size:
        raise OSError(f"chunk {path.name} holds {len(content)} bytes, not {size}")
    return content
