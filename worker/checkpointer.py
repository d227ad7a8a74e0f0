"""Saving an attempt's checkpoint directory while its program runs.

Every ``every`` seconds of the assignment's :class:`CheckpointPlan`, and when the attempt is
suspended or the worker stops, a :class:`Checkpointer` takes a consistent snapshot of the
directory (:mod:`.checkpoint_snapshot`, in a thread: the program is never stalled), and if
anything changed since the last save it stores the new chunks and the manifest at a warehouse
through the uploads plan (so a chunk some warehouse holds is never sent again, and every byte
goes in paced packets like any output), then tells the coordinator, which records it as the
task's latest checkpoint. A checkpoint larger than the worker's limit is not saved, and the
task's log says so.

A save never fails the attempt: whatever goes wrong is logged and the next period tries again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xwch.errors import ApiError, XwchError
from xwch.protocol.checkpoints import CheckpointPlan, CheckpointRecorded, CheckpointSaved
from xwch.protocol.objects import ObjectRef

from .checkpoint_manifest import Chunk, Manifest
from .checkpoint_restore import FetchObject, restore_checkpoint
from .checkpoint_snapshot import (
    Fingerprints,
    Identity,
    Snapshot,
    SnapshotTooBig,
    SnapshotUnstable,
    take_snapshot,
)
from .files import remove_tree
from .link import UploadPlan

# Stores one object at a warehouse: (warehouse URL, digest, size, local file, put capability).
StoreObject = Callable[[str, str, int, Path, str], Awaitable[None]]
# Runs a blocking call off the reactor.
Blocking = Callable[..., Deferred[object]]


class CheckpointLink(Protocol):
    """What saving needs of the coordinator (a :class:`CoordinatorLink`)."""

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan: ...

    async def checkpoint_saved(self, saved: CheckpointSaved) -> CheckpointRecorded: ...


class Checkpointer:
    """Saves one attempt's checkpoint directory; ``note`` writes to the task's log."""

    log = Logger()

    # Objects stored at once by a save.
    UPLOADS_AT_ONCE = 4

    def __init__(
        self,
        reactor: IReactorTime,
        attempt_id: str,
        plan: CheckpointPlan,
        directory: Path,
        staging: Path,
        limit: int,
        link: CheckpointLink,
        store_object: StoreObject,
        fetch: FetchObject,
        blocking: Blocking,
        note: Callable[[str], None],
    ) -> None:
        self._reactor = reactor
        self._attempt_id = attempt_id
        self.plan = plan
        self.directory = directory
        self._staging = staging
        self._limit = limit
        self._link = link
        self._store_object = store_object
        self._fetch = fetch
        self._blocking = blocking
        self._note = note
        # Chunks known to be at a warehouse: those of the checkpoint restored and of each save.
        self._known: set[str] = set()
        self._identities: dict[Identity, tuple[Chunk, ...]] = {}
        self._fingerprints: Fingerprints = {}
        # The manifest of the last checkpoint saved or restored (None: none yet).
        self.last_saved: str | None = None
        self.saves = 0
        # Bytes of objects stored at warehouses by this attempt's saves (before compression).
        self.sent_bytes = 0
        self._loop: LoopingCall | None = None
        self._saving: Deferred[None] | None = None
        # A save asked for while one runs: it goes once that one ends (the state may be newer).
        self._again: Deferred[None] | None = None
        self._too_big_told = False
        self._stopped = False

    async def restore(self) -> None:
        """Lay out the newest checkpoint that can be read whole (or an empty directory), and
        say in the task's log what was restored and what could not be."""
        restored = await restore_checkpoint(self.plan, self.directory, self._fetch, self._blocking)
        for line in restored.notes:
            self._note(line)
        if restored.checkpoint is not None and restored.manifest is not None:
            # Its chunks are at a warehouse already: a save sends only what changes.
            self.last_saved = restored.checkpoint.manifest
            self._known.update(restored.manifest.chunks())

    def start(self) -> None:
        """Save every ``plan.every`` seconds from now on (the program has started)."""
        if self._stopped or self._loop is not None:
            return
        self._loop = LoopingCall(self._periodic)
        self._loop.clock = self._reactor
        self._loop.start(self.plan.every, now=False).addErrback(self._loop_failed)

    def _periodic(self) -> None:
        if self._saving is None:
            self.save()

    def _loop_failed(self, failure: Failure) -> None:
        self.log.failure(
            "checkpoints of attempt {attempt} stopped", failure, attempt=self._attempt_id
        )

    def save(self) -> Deferred[None]:
        """Save now (after the save under way, if any); fires when done, never fails."""
        if self._stopped:
            return Deferred.fromCoroutine(_nothing())
        if self._saving is None:
            saving = self._saving = Deferred.fromCoroutine(self._save())
            # May fire at once (and forget itself) when nothing had to wait.
            saving.addBoth(self._saved)
            return _follow(saving)
        if self._again is None:
            again: Deferred[None] = Deferred()
            self._again = again
        return _follow(self._again)

    def _saved(self, result: object) -> None:
        self._saving = None
        again, self._again = self._again, None
        if again is not None:
            self.save().chainDeferred(again)
        if isinstance(result, Failure) and not result.check(CancelledError):
            self.log.failure(
                "saving a checkpoint of {attempt} failed", result, attempt=self._attempt_id
            )

    def stop(self) -> None:
        """No more saves (the program ended or the attempt is dropped): a save under way is
        cancelled, and the staged chunks removed."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._saving is not None:
            self._saving.cancel()
        if self._again is not None:
            again, self._again = self._again, None
            again.callback(None)

    def discard(self) -> None:
        """Remove the staged chunks (blocking: run off the reactor)."""
        if self._staging.exists():
            remove_tree(self._staging)

    async def _save(self) -> None:
        self._staging.mkdir(parents=True, exist_ok=True)
        try:
            snapshot = await self._blocking(
                partial(
                    take_snapshot,
                    self.directory,
                    self._staging,
                    frozenset(self._known),
                    dict(self._identities),
                    self._limit,
                    fingerprints=dict(self._fingerprints),
                )
            )
        except SnapshotTooBig as e:
            if not self._too_big_told:
                self._too_big_told = True
                self._note(
                    f"xwch: warning: the checkpoint is not saved: its {e.size} bytes are more "
                    f"than this worker's limit of {e.limit} (--max-checkpoint)"
                )
            self.log.warn(
                "checkpoint of attempt {attempt} not saved: {error}",
                attempt=self._attempt_id,
                error=e,
            )
            return
        except SnapshotUnstable as e:
            self.log.info(
                "checkpoint of attempt {attempt} skipped: {error}",
                attempt=self._attempt_id,
                error=e,
            )
            return
        assert isinstance(snapshot, Snapshot)
        self._too_big_told = False
        manifest = snapshot.manifest
        digest = manifest.digest()
        if digest == self.last_saved:
            return
        encoded = manifest.encode()
        manifest_path = self._staging / digest
        await self._blocking(manifest_path.write_bytes, encoded)
        files = {**snapshot.staged, digest: manifest_path}
        sizes = {**manifest.chunks(), digest: len(encoded)}
        try:
            sent = await self._upload(files, sizes)
            try:
                answer = await self._report(manifest, digest, len(encoded))
            except ApiError as e:
                if e.code != "missing_objects":
                    raise
                # A chunk thought to be at a warehouse was dropped since: send them all.
                self._known.clear()
                files = self._all_files(snapshot.manifest, files)
                sent += await self._upload(files, sizes)
                answer = await self._report(manifest, digest, len(encoded))
        except (XwchError, OSError) as e:
            self.log.warn(
                "cannot save the checkpoint of attempt {attempt}: {error}",
                attempt=self._attempt_id,
                error=e,
            )
            return
        finally:
            for path in files.values():
                path.unlink(missing_ok=True)
        if not answer.recorded:
            return
        self.saves += 1
        self.last_saved = digest
        self._known.update(manifest.chunks())
        self._identities = snapshot.identities
        self._fingerprints = snapshot.fingerprints
        self.sent_bytes += sent
        self.log.info(
            "checkpoint {manifest} of attempt {attempt} saved: {content} bytes, {sent} sent",
            manifest=digest[:12],
            attempt=self._attempt_id,
            content=manifest.content,
            sent=sent,
        )

    def _all_files(self, manifest: Manifest, staged: dict[str, Path]) -> dict[str, Path]:
        """Every chunk of ``manifest`` as a file (read again from the checkpoint directory)."""
        files = dict(staged)
        for entry in manifest.files:
            offset = 0
            for chunk in entry.chunks:
                if chunk.digest not in files:
                    with open(self.directory / entry.path, "rb") as f:
                        f.seek(offset)
                        block = f.read(chunk.size)
                    path = self._staging / chunk.digest
                    path.write_bytes(block)
                    files[chunk.digest] = path
                offset += chunk.size
        return files

    async def _upload(self, files: dict[str, Path], sizes: dict[str, int]) -> int:
        """Store at a warehouse those of ``files`` no warehouse holds; the bytes sent."""
        refs = [ObjectRef(d, sizes[d]) for d in files]
        plan = await self._link.upload_plan(refs)
        wanted = [(d, capability) for d, capability in plan.missing if d in files]
        # Chunks are small objects, each a request and a report to the coordinator: a few at
        # once keep the link busy (the pacer still bounds the worker's transfers and rate).
        gate = DeferredSemaphore(self.UPLOADS_AT_ONCE)

        async def store_one(digest: str, capability: str) -> None:
            await self._store_object(plan.url, digest, sizes[digest], files[digest], capability)

        def store(digest: str, capability: str) -> Deferred[None]:
            return Deferred.fromCoroutine(store_one(digest, capability))

        try:
            await gatherResults(
                [gate.run(store, d, capability) for d, capability in wanted], consumeErrors=True
            )
        except FirstError as e:
            error = e.subFailure.value
            raise error if isinstance(error, Exception) else e from None
        return sum(sizes[d] for d, _ in wanted)

    async def _report(self, manifest: Manifest, digest: str, size: int) -> CheckpointRecorded:
        return await self._link.checkpoint_saved(
            CheckpointSaved(
                attempt=self._attempt_id,
                manifest=digest,
                size=size,
                content=manifest.content,
                chunks=tuple(manifest.chunks()),
            )
        )


async def _nothing() -> None:
    return None


def _follow(source: Deferred[None]) -> Deferred[None]:
    """A Deferred firing when ``source`` does, whose cancellation leaves ``source`` alone."""
    follower: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        if not follower.called:
            follower.callback(None)
        return result

    source.addBoth(fire)
    return follower
