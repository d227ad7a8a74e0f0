"""The coordinators of a platform, as every part learns them (``GET /coordinators``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from xwch.protocol.codec import Message


class CoordinatorInfo(Message, frozen=True):
    """One member: where it answers, whether it is live, what it holds and runs."""

    id: str
    url: str
    state: Literal["live", "lost"]
    # The logical groups of workers it holds the lock of.
    groups: tuple[str, ...]
    workers: int
    running: int
    last_heard: float


class CoordinatorList(Message, frozen=True):
    WHERE: ClassVar[str] = "coordinators"

    coordinators: tuple[CoordinatorInfo, ...]


# The query parameter of a Register Request or a new job sent on to the member holding the
# group it was placed in (``coordinator/routing.py``): that member puts it there.
GROUP = "group"
