"""Checkpoints: what an assignment tells of its task's checkpoint, and what a worker reports
each time it saved one (``POST /workers/{id}/checkpoints``).

A saved checkpoint is a *manifest* object (:mod:`xwch.worker.checkpoint_manifest`) listing
the files of the checkpoint directory, each as the digests of its chunks; the chunks are
objects of their own, so a save sends only the chunks no warehouse holds yet.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from xwch.protocol.codec import Message
from xwch.protocol.objects import Digest, NonEmpty, Size

# The most chunks one checkpoint may list: a 1 GiB checkpoint (the workers' default limit) in
# chunks of 256 KiB is 4096; bounded so a report stays a message, not a bulk transfer.
MAX_CHUNKS = 65536


class SavedCheckpoint(Message, frozen=True):
    """One checkpoint a relaunched attempt may start from: its manifest, and when it was
    recorded (the coordinator's clock). Its objects' sources are in the assignment's."""

    manifest: Digest
    size: Size
    taken: float


class CheckpointPlan(Message, frozen=True, omit_defaults=True):
    """In an assignment: where the program keeps its checkpoint, how often to save it, and
    the checkpoints saved by earlier attempts, newest first (the worker restores the first it
    can read whole)."""

    path: NonEmpty
    every: Annotated[float, Meta(gt=0)]
    restore: tuple[SavedCheckpoint, ...] = ()


class CheckpointSaved(Message, frozen=True):
    """A worker saved the checkpoint of an attempt: every object named is at a warehouse."""

    WHERE: ClassVar[str] = "checkpoint"

    attempt: NonEmpty
    manifest: Digest
    size: Size
    # The bytes of the files it holds (what `xwch-client tasks` may show).
    content: Size
    chunks: Annotated[tuple[Digest, ...], Meta(max_length=MAX_CHUNKS)]


class CheckpointRecorded(Message, frozen=True):
    """The answer: recorded, or not wanted any more (the attempt or its task is over)."""

    recorded: bool
    taken: float | None = None
