"""The job file's keys for results checked by replication: ``quorum``, ``max_attempts``,
``compare``.

They may be written at the job's top level (defaults for every task) and on a task (the task's
value wins). :func:`parse_keys` reads what one object writes; :func:`resolve` merges a task's
keys over the job's into the task's :class:`Replication`, or None when its results are taken
as they come (a quorum of 1). The wire form carries every task's resolved keys, read back by
:func:`from_wire`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from xwch.dagcheck import Checker, json_type, key_path, quote

KEYS = ("quorum", "max_attempts", "compare")
ADAPTIVE = "adaptive"
MAX_QUORUM = 10
# Beyond the quorum, how many more results a task may gather before it fails for want of
# agreement: one wrong result and one more try, as the job-file format says.
EXTRA_ATTEMPTS = 2
# Replicated work of an "adaptive" task: two results must agree.
ADAPTIVE_QUORUM = 2
# A generous bound: each attempt is a run on a volunteer's machine.
MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class ReplicationKeys:
    """What one object of the file (the job, or a task) writes; None: not written there."""

    quorum: int | str | None = None
    max_attempts: int | None = None
    compare: str | None = None
    path: str = ""


@dataclass(frozen=True)
class Replication:
    """How a task's results are checked.

    ``quorum`` results from different workers must agree (for an adaptive task: when it is
    replicated at all); at most ``max_attempts`` results are gathered; ``compare`` names the
    binary that decides whether two results agree (None: identical digests).
    """

    quorum: int
    max_attempts: int
    adaptive: bool = False
    compare: str | None = None

    def to_wire(self) -> dict[str, object]:
        quorum: int | str = ADAPTIVE if self.adaptive else self.quorum
        wire: dict[str, object] = {"quorum": quorum, "max_attempts": self.max_attempts}
        if self.compare is not None:
            wire["compare"] = self.compare
        return wire


class HasReplication(Protocol):
    @property
    def replication(self) -> Replication | None: ...


def parse_keys(
    check: Checker, obj: Mapping[str, object], path: str, binaries: Collection[str]
) -> ReplicationKeys:
    """The replication keys ``obj`` (at ``path``) writes, each checked on its own."""
    quorum: int | str | None = None
    if "quorum" in obj:
        quorum = _quorum(check, obj["quorum"], key_path(path, "quorum"))
    max_attempts: int | None = None
    if "max_attempts" in obj:
        max_attempts = check.integer(
            obj["max_attempts"], key_path(path, "max_attempts"), 1, MAX_ATTEMPTS
        )
    compare: str | None = None
    if "compare" in obj:
        where = key_path(path, "compare")
        compare = check.string(obj["compare"], where)
        if compare not in binaries:
            check.fail(where, f"unknown binary {quote(compare)}")
    return ReplicationKeys(quorum, max_attempts, compare, path)


def _quorum(check: Checker, value: object, where: str) -> int | str:
    if value == ADAPTIVE:
        return ADAPTIVE
    if type(value) is not int:
        check.fail(
            where,
            f'expected an integer from 1 to {MAX_QUORUM} or "adaptive", got '
            + (quote(value) if isinstance(value, str) else json_type(value)),
        )
    if not 1 <= value <= MAX_QUORUM:
        check.fail(where, f'{value} is out of range (1 to {MAX_QUORUM}, or "adaptive")')
    return value


def resolve(
    check: Checker, job: ReplicationKeys, task: ReplicationKeys, context: Callable[[], str] = str
) -> Replication | None:
    """The task's replication: its own keys over the job's. ``context()`` ends messages (built
    only on failure: this runs for every task)."""
    quorum = task.quorum if task.quorum is not None else job.quorum
    if quorum is None or quorum == 1:
        # Keys that would do nothing are a mistake of the author's, not something to ignore.
        for key in ("max_attempts", "compare"):
            if getattr(task, key) is not None:
                check.fail(
                    key_path(task.path, key),
                    f"{key} needs a quorum (the task's quorum is 1)" + context(),
                )
        return None
    adaptive = quorum == ADAPTIVE
    needed = ADAPTIVE_QUORUM if adaptive else int(quorum)
    from_task = task.max_attempts is not None
    max_attempts = task.max_attempts if from_task else job.max_attempts
    if max_attempts is None:
        max_attempts = needed + EXTRA_ATTEMPTS
    elif max_attempts < needed:
        where = task.path if from_task else job.path
        check.fail(
            key_path(where, "max_attempts"),
            f"{max_attempts} is less than the quorum ({needed}): "
            "the task could never gather enough results" + context(),
        )
    compare = task.compare if task.compare is not None else job.compare
    return Replication(needed, max_attempts, adaptive, compare)


def check_job_keys_used(
    check: Checker, job: ReplicationKeys, tasks: Iterable[HasReplication]
) -> None:
    """The job's ``max_attempts`` or ``compare`` with no task replicated would do nothing."""
    if job.quorum is not None and job.quorum != 1:
        return
    if any(t.replication is not None for t in tasks):
        return
    for key in ("max_attempts", "compare"):
        if getattr(job, key) is not None:
            check.fail(key, f"{key} needs a quorum, and no task of the job has one")


def from_wire(
    check: Checker, obj: Mapping[str, object], path: str, binaries: Collection[str]
) -> Replication | None:
    """A task's replication from its wire form (absent keys: none)."""
    # The common case first: this runs for up to a million tasks.
    if "quorum" not in obj and "max_attempts" not in obj and "compare" not in obj:
        return None
    keys = parse_keys(check, obj, path, binaries)
    if keys.quorum is None and (keys.max_attempts is not None or keys.compare is not None):
        check.fail(path, "max_attempts and compare need a quorum")
    return resolve(check, ReplicationKeys(), keys)
