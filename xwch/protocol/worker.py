"""The worker's signals to the coordinator, and their answers.

RR ``POST /workers`` (:class:`HostFacts` -> :class:`Registered`), WR ``POST /workers/{id}/work``
(:class:`WorkRequest` -> :class:`WorkAnswer`), WA ``POST /workers/{id}/alive``
(:class:`WorkAlive` -> :class:`AliveAnswer`), WRS ``POST /workers/{id}/results``
(:class:`ResultsReport` -> :class:`ResultsAnswer`) and ``POST /workers/{id}/giveback``
(:class:`GiveBack`). The transfer :class:`Policy` and :class:`TransfersReport` are shared with
the warehouses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta

from xwch.protocol.checkpoints import CheckpointPlan
from xwch.protocol.codec import Message
from xwch.protocol.objects import (
    BinaryRef,
    Digest,
    InputFile,
    NonEmpty,
    OutputFile,
    Source,
    check_inline,
)
from xwch.protocol.wire import (
    CACHE_PREFIX,
    CACHE_REPORT_MAX,
    LOG_TAIL_BYTES,
    MAX_REPORTED_PEERS,
    PROTOCOL_VERSION,
    Outcome,
)
from xwch.signing import SignatureError, normalized_key

Count = Annotated[int, Meta(ge=0)]
# More keys than any volunteer would trust: a bound on what one Register Request makes us check.
MAX_TRUSTED_KEYS = 64
Seconds = Annotated[float, Meta(ge=0)]
CachePrefix = Annotated[str, Meta(pattern=f"^[0-9a-f]{{{CACHE_PREFIX}}}$")]
# Why a worker computes nothing now, in the volunteer's terms ("the computer is in use"),
# shown to users as is: one line, bounded.
SuspendReason = Annotated[str, Meta(min_length=1, max_length=200)]


class Policy(Message, frozen=True):
    """How every sender paces its transfers, set by the communication manager."""

    packet_size: Annotated[int, Meta(ge=1)] = 1024 * 1024
    packet_sleep: Seconds = 0.0
    max_transfers: Annotated[int, Meta(ge=1)] = 4


# RR


class HostFacts(Message, frozen=True, omit_defaults=True):
    """What a worker tells of its machine in its Register Request."""

    WHERE: ClassVar[str] = "register"

    name: str
    address: str
    platform: str
    cores: Annotated[int, Meta(ge=1)]
    memory: Count
    slots: Annotated[int, Meta(ge=1)]
    performance: Annotated[float, Meta(gt=0)]
    site: str | None = None
    # What its cache holds, as digest prefixes of CACHE_PREFIX hex digits (compact: a hint for
    # the scheduler's locality, not a promise), the most recently used first.
    cached: Annotated[tuple[CachePrefix, ...], Meta(max_length=CACHE_REPORT_MAX)] = ()
    # The protocol the worker speaks; 0: a worker from before versions were exchanged.
    protocol: int = 0
    # Why it computes nothing now (its volunteer's preferences); None: it computes. Optional:
    # a worker started outside its hours is shown suspended from its registration on.
    suspended: SuspendReason | None = None
    # The id this worker's installation was registered under before it started again (kept in
    # its data folder): that registration's process is gone, and its attempts with it, so the
    # coordinator need not wait for its silence to time out. Optional both ways.
    replaces: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    # The public keys (``ed25519:BASE64``) whose signed programs alone it runs; empty: it runs
    # any program. Optional: older workers trust no key.
    trusted_keys: Annotated[tuple[str, ...], Meta(max_length=MAX_TRUSTED_KEYS)] = ()

    def __post_init__(self) -> None:
        if self.trusted_keys:
            try:
                keys = tuple(normalized_key(k) for k in self.trusted_keys)
            except SignatureError as e:
                raise ValueError(f"trusted_keys: {e}") from None
            msgspec.structs.force_setattr(self, "trusted_keys", keys)


class Registered(Message, frozen=True):
    """The answer to a Register Request."""

    worker_id: NonEmpty
    alive_interval: Annotated[float, Meta(gt=0)]
    policy: Policy
    protocol: int = PROTOCOL_VERSION


# WR


class WorkRequest(Message, frozen=True, omit_defaults=True):
    """What a Work Request asks for, alone or carried by a Work Result."""

    WHERE: ClassVar[str] = "work"

    performance: float
    free_slots: Count
    # Slots with nothing to run (the others of ``free_slots`` are asked for ahead); None when
    # not said (all are idle). Only idle slots get duplicates of stragglers.
    idle_slots: Count | None = None
    # How long the request may wait for work when there is none (0: answer at once).
    wait: Seconds = 0.0


class Assignment(Message, frozen=True, omit_defaults=True):
    """One attempt of a task given to a worker in the reply to its Work Request."""

    WHERE: ClassVar[str] = "assignment"

    attempt: str
    job: str
    task: str
    number: int
    binary: BinaryRef
    args: tuple[str, ...]
    env: Mapping[str, str]
    inputs: tuple[InputFile, ...]
    outputs: tuple[str, ...]
    timeout: float | None = None
    # digest -> where to read it; covers the binary and every input not carried inline.
    sources: Mapping[Digest, tuple[Source, ...]] = {}
    # Where small outputs may go without asking for an uploads plan, with a capability to store
    # any object there (absent: every output goes through the plan).
    upload: Source | None = None
    # digest -> bytes, for the inputs the coordinator keeps itself (INLINE_MOST at most).
    inline: Mapping[str, bytes] = {}
    # The task's checkpoint (None: it keeps none); the objects of the checkpoints to restore
    # are in ``sources``. Optional: older workers ignore it and start from scratch.
    checkpoint: CheckpointPlan | None = None

    def __post_init__(self) -> None:
        if self.inline:
            sizes = {i.digest: i.size for i in self.inputs}
            for digest, content in self.inline.items():
                if digest not in sizes:
                    raise ValueError(f"inline: {digest!r} is none of the inputs")
                check_inline(content, digest, sizes[digest])


class WorkAnswer(Message, frozen=True):
    """The tasks given (possibly none) and the policy of the worker's link."""

    tasks: tuple[Assignment, ...]
    policy: Policy


# WRS


class AttemptResult(Message, frozen=True):
    """A Work Result: how an attempt ended."""

    WHERE: ClassVar[str] = "result"

    attempt: str
    outcome: Outcome
    exit_code: int | None = None
    error: str | None = None
    outputs: tuple[OutputFile, ...] = ()
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0

    def __post_init__(self) -> None:
        # Only the tails are kept (docs/cli.md): a longer log is cut here, not refused.
        if len(self.stdout) > LOG_TAIL_BYTES:
            msgspec.structs.force_setattr(self, "stdout", self.stdout[-LOG_TAIL_BYTES:])
        if len(self.stderr) > LOG_TAIL_BYTES:
            msgspec.structs.force_setattr(self, "stderr", self.stderr[-LOG_TAIL_BYTES:])


class ResultsReport(Message, frozen=True, omit_defaults=True):
    """A Work Result: the results a worker finished since its last one (one, or those that ended
    while the previous report was on its way), and the Work Request for the slots they free."""

    WHERE: ClassVar[str] = "report"

    results: Annotated[tuple[AttemptResult, ...], Meta(min_length=1)]
    work: WorkRequest | None = None


class ResultAnswer(Message, frozen=True, omit_defaults=True):
    """One result's part of a report's answer: taken, or the error it alone would have got."""

    accepted: bool | None = None
    error: str | None = None
    message: str | None = None
    # With error "missing_objects": the outputs stored at no warehouse.
    digests: tuple[str, ...] = ()


class ResultsAnswer(Message, frozen=True, omit_defaults=True):
    """One answer per result, in order; with the work asked for, ``tasks`` and ``policy`` as a
    Work Request's answer, or neither when the coordinator was too busy to assign (then the
    worker sends a Work Request of its own)."""

    results: tuple[ResultAnswer, ...]
    tasks: tuple[Assignment, ...] | None = None
    policy: Policy | None = None


# WA


class PeerTraffic(Message, frozen=True):
    """What a party's transfers with one peer did since its last report.

    ``busy``: seconds spent with a packet in flight; ``min_rtt``/``avg_rtt``: the packets' delay
    (a download's time to the answer's first byte, an upload's time beyond the best rate seen).
    """

    sent: Count = 0
    received: Count = 0
    busy: Seconds = 0.0
    packets: Count = 0
    min_rtt: Seconds | None = None
    avg_rtt: Seconds | None = None


class InterfaceTraffic(Message, frozen=True):
    """What the host's network interfaces carried (loopback excluded): XWCH's and others'."""

    sent: Count
    received: Count


class TransfersReport(Message, frozen=True):
    """A party's traffic since its last report (the optional ``transfers`` of WA and heartbeat).

    ``interface``: what the host's interfaces carried over the same period; the difference with
    the peers' traffic is the other traffic sharing the link.
    """

    seconds: Seconds
    peers: Annotated[Mapping[str, PeerTraffic], Meta(max_length=MAX_REPORTED_PEERS)] = {}
    interface: InterfaceTraffic | None = None

    @property
    def interface_sent(self) -> int | None:
        return None if self.interface is None else self.interface.sent

    @property
    def interface_received(self) -> int | None:
        return None if self.interface is None else self.interface.received


class RunningAttempt(Message, frozen=True):
    """One attempt a worker reports in its Work Alive."""

    attempt: str
    state: Literal["running", "suspended"] = "running"


class WorkAlive(Message, frozen=True, omit_defaults=True):
    """A Work Alive: the attempts the worker holds, its traffic, what left its cache."""

    WHERE: ClassVar[str] = "alive"

    running: tuple[RunningAttempt, ...]
    # Those of ``running`` held ahead that have not started (waiting for a slot): their tasks
    # are "assigned", not "running". Its own field, so that either side may be older.
    waiting: tuple[str, ...] = ()
    transfers: TransfersReport | None = None
    evicted: tuple[Digest, ...] = ()
    # Why the worker computes nothing now (None: it computes); sent in every WA, and in one
    # sent at once when it suspends or resumes. Optional: absent from older workers.
    suspended: SuspendReason | None = None


class AliveAnswer(Message, frozen=True):
    """The attempts to kill, and the policy of the worker's link."""

    cancel: tuple[str, ...]
    policy: Policy


class GiveBack(Message, frozen=True):
    """Attempts a stopping worker gives back: they run again elsewhere, no failure counted."""

    WHERE: ClassVar[str] = "giveback"

    attempts: tuple[str, ...]
