"""The worker's link to its coordinator: registration, and every message sent there.

Each kind of message has one method here, which builds its body and reads its answer (routes
and bodies: docs/protocol.md): :meth:`CoordinatorLink.register` (RR),
:meth:`~CoordinatorLink.request_work` (WR), :meth:`~CoordinatorLink.send_results` (WRS),
:meth:`~CoordinatorLink.alive` (WA), :meth:`~CoordinatorLink.give_back` and
:meth:`~CoordinatorLink.upload_plan`. The rest of the worker sees only what those return. The link also retries what is worth retrying, applies the
transfer policy every answer may carry, and registers again when the coordinator answers that it
does not know this worker (404 ``unknown_worker``: it declared the worker lost).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import msgspec
from msgspec.structs import replace
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch.errors import ApiError, Unreachable, XwchError
from xwch.protocol.checkpoints import CheckpointRecorded, CheckpointSaved
from xwch.protocol.codec import Message, ProtocolError, ProtocolVersionError, decode
from xwch.protocol.objects import ObjectRef, UploadsRequest
from xwch.protocol.objects import UploadPlan as WireUploadPlan
from xwch.protocol.wire import API_PREFIX, CACHE_PREFIX, CACHE_REPORT_MAX, PROTOCOL_VERSION
from xwch.protocol.worker import (
    AliveAnswer,
    Assignment,
    AttemptResult,
    GiveBack,
    HostFacts,
    Policy,
    Registered,
    ResultAnswer,
    ResultsReport,
    RunningAttempt,
    TransfersReport,
    WorkAlive,
    WorkRequest,
)
from xwch.retry import RetryPolicy, equal_jitter, retrying

from .last_registration import LastRegistration
from .sites import Nearest


class Coordinator(Protocol):
    """What the link needs of the coordinator's API (``xwch.http.JsonApi`` is one)."""

    async def post(self, path: str, body: object | None = None) -> Any: ...

    async def post_as(self, path: str, answer: type[M], body: object | None = None) -> M: ...


M = TypeVar("M")


class PolicyListener(Protocol):
    """What applies the coordinator's transfer policy (a :class:`PacketPacer`)."""

    def update(self, policy: Policy) -> None: ...


# The site of the warehouse nearest to this worker (see sites.py); None if none answers.
LocateSite = Callable[[], Awaitable["Nearest | None"]]
# What the cache holds, the most recently used first (digests).
CacheContents = Callable[[], Sequence[str]]


class RegistrationRefused(XwchError):
    """The coordinator refused to register this worker (a wrong token, most likely)."""


class WorkerLost(XwchError):
    """The coordinator does not know this worker any more: it registers again."""


@dataclass(frozen=True)
class WorkAsk:
    """Work asked for: ``slots`` attempts, ``idle`` of them for slots with nothing to run (the
    others are asked for ahead: no straggler's duplicate should wait there), and how long the
    request may wait at the coordinator for work if there is none (0: not at all)."""

    slots: int
    idle: int
    wait: float = 0.0


@dataclass(frozen=True)
class Unreadable:
    """An assignment the worker cannot read: reported failed (if it names its attempt)."""

    attempt: str | None
    error: ProtocolError


# The tasks of an answer, in order: each an assignment, or why it could not be read.
Tasks = list[Assignment | Unreadable]


@dataclass(frozen=True)
class Verdict:
    """The coordinator's answer to one result: taken, or refused (and why)."""

    accepted: bool
    refused: object = None


@dataclass(frozen=True)
class ResultsAnswer:
    """A Work Result's answer: a verdict per result, and the tasks it assigned if it carried a
    Work Request (None: a coordinator too busy to assign then)."""

    verdicts: list[Verdict]
    tasks: Tasks | None


@dataclass(frozen=True)
class UploadPlan:
    """Where to store outputs: a warehouse, and the capability of each object it lacks."""

    url: str
    missing: list[tuple[str, str]]


class CoordinatorLink:
    """This worker as the coordinator knows it, and the one way to talk to it."""

    log = Logger()

    # Retries of calls the coordinator did not answer or was too busy for; equal jitter
    # (``equal_jitter``) so that workers cut off together do not all come back at one instant.
    RETRY_BASE = 0.5
    RETRY_CAP = 30.0

    def __init__(
        self,
        reactor: IReactorTime,
        coordinator: Coordinator,
        facts: HostFacts,
        pacer: PolicyListener,
        retry_policy: RetryPolicy | None = None,
        locate_site: LocateSite | None = None,
        cache_contents: CacheContents | None = None,
        on_registered: Callable[[float], None] = lambda interval: None,
        on_lost: Callable[[], None] = lambda: None,
        suspended: Callable[[], str | None] = lambda: None,
        last: LastRegistration | None = None,
    ) -> None:
        """``last``: where the id of the last registration is kept across restarts, to be
        named as replaced by the next one (last_registration.py)."""
        self._reactor = reactor
        self._last = last
        # Why the worker computes nothing now (None: it computes), told in every registration.
        self._suspended = suspended
        self._coordinator = coordinator
        self.facts = facts
        self._pacer = pacer
        self.retry_policy = retry_policy or equal_jitter(self.RETRY_BASE, self.RETRY_CAP)
        self._locate_site = locate_site
        self._cache_contents = cache_contents
        # Told the Work Alive period on each registration; told when this worker is found lost.
        self._on_registered = on_registered
        self._on_lost = on_lost
        self.worker_id: str | None = None
        self.alive_interval: float | None = None
        # True once the coordinator answered 404 unknown_worker: register again.
        self.lost = False
        self._registrations = 0
        self._registered_waiters: list[Deferred[None]] = []
        self._first_registration: list[Deferred[str]] = []
        self._refused: RegistrationRefused | None = None

    def when_registered(self) -> Deferred[str]:
        """Fires with the worker id once first registered; fails if the coordinator refuses."""
        d: Deferred[str] = Deferred()
        if self.worker_id is not None:
            d.callback(self.worker_id)
        elif self._refused is not None:
            d.errback(self._refused)
        else:
            self._first_registration.append(d)
        return d

    # Register Request

    async def register(self) -> None:
        """Register Request, retried while the coordinator is unreachable or busy."""
        await self._find_site()

        def worth_retrying(e: Exception) -> bool:
            if isinstance(e, ApiError) and not _is_transient(e) and self._registrations == 0:
                # A refusal at start (bad token, wrong role) will not go away by itself:
                # say so rather than retry forever.
                return False
            if isinstance(e, ProtocolVersionError):
                return False  # the same answer whenever asked
            return isinstance(e, (Unreachable, ApiError, ProtocolError))

        def log_retry(e: Exception, delay: float) -> None:
            self.log.warn(
                "cannot register: {error}; trying again in {delay:.1f} s", error=e, delay=delay
            )

        try:
            registered = await retrying(
                self._reactor, self._send_registration, self.retry_policy, worth_retrying, log_retry
            )
        except (ApiError, ProtocolVersionError) as e:
            refused = RegistrationRefused(f"the coordinator refused to register: {e}")
            self._refused = refused
            for d in _take(self._first_registration):
                d.errback(refused)
            raise refused from None
        worker_id, interval = registered.worker_id, registered.alive_interval
        self.worker_id = worker_id
        if self._last is not None:
            self._last.write(worker_id)
        self.alive_interval = interval
        self.lost = False
        self._registrations += 1
        self._pacer.update(registered.policy)
        self.log.info(
            "registered as {worker} (alive every {interval} s)",
            worker=worker_id,
            interval=interval,
        )
        self._on_registered(interval)
        for d in _take(self._first_registration):
            d.callback(worker_id)
        for waiter in _take(self._registered_waiters):
            waiter.callback(None)

    async def _send_registration(self) -> Registered:
        registered = await self._coordinator.post_as(
            f"{API_PREFIX}/workers", Registered, self._registration_facts()
        )
        if registered.protocol != PROTOCOL_VERSION:
            raise ProtocolVersionError(
                f"it speaks protocol version {registered.protocol} and this worker "
                f"{PROTOCOL_VERSION}: run the same XWCH release on both"
            )
        return registered

    async def _find_site(self) -> None:
        """No site configured: take that of the nearest warehouse, if one answers."""
        if self.facts.site is not None or self._locate_site is None:
            return
        try:
            nearest = await self._locate_site()
        except (Unreachable, ApiError, ProtocolError) as e:
            self.log.warn("cannot find the nearest warehouse: {error}", error=e)
            return
        if nearest is None:
            return
        self.facts = replace(self.facts, site=nearest.site)
        self.log.info(
            "site {site}: nearest warehouse {url} ({ms:.1f} ms round trip)",
            site=nearest.site,
            url=nearest.url,
            ms=nearest.round_trip * 1000,
        )

    def _registration_facts(self) -> HostFacts:
        """The host facts, with what the cache holds (the scheduler sends work to its data) and
        whether the worker is suspended."""
        # The registration this one replaces: this process's previous one (declared lost), or
        # that of the worker's previous run.
        previous = self.worker_id or (self._last.read() if self._last is not None else None)
        facts = replace(self.facts, suspended=self._suspended(), replaces=previous)
        if self._cache_contents is None:
            return facts
        cached = self._cache_contents()[:CACHE_REPORT_MAX]
        return replace(facts, cached=tuple(sorted({d[:CACHE_PREFIX] for d in cached})))

    def _declared_lost(self, worker_id: str | None) -> None:
        """The coordinator forgot ``worker_id`` (404 unknown_worker): register again.

        Only if that is still our id: a late answer to a call made under the previous one
        must not throw away the registration that replaced it.
        """
        if worker_id != self.worker_id:
            return
        if not self.lost:
            self.log.warn(
                "the coordinator does not know worker {worker} any more: registering again",
                worker=self.worker_id,
            )
        self.lost = True
        self._on_lost()

    async def _until_registered(self) -> None:
        if not self.lost:
            return
        waiter: Deferred[None] = Deferred()
        self._registered_waiters.append(waiter)
        await waiter

    # Work Request

    async def request_work(self, ask: WorkAsk) -> Tasks:
        """One Work Request (the pull loop decides when to try again); the tasks assigned.

        Raises :class:`WorkerLost` if the coordinator does not know this worker any more.
        """
        worker_id = self.worker_id
        try:
            answer = await self._coordinator.post_as(
                self._worker_path("/work"), _WorkReceived, _work_request(self, ask)
            )
        except ApiError as e:
            if _is_unknown_worker(e):
                self._declared_lost(worker_id)
                raise WorkerLost(str(e)) from None
            raise
        self._pacer.update(answer.policy)
        return _tasks(answer.tasks)

    # Work Result

    async def send_results(
        self, results: Sequence[AttemptResult], work: WorkAsk | None
    ) -> ResultsAnswer:
        """Work Result of ``results``, with a Work Request if ``work``; the coordinator's verdict
        on each, and the tasks it assigned.

        Retried until the coordinator answers; a result is never dropped. Raises
        :class:`ApiError` if it refuses them (an answer, not a silence: retrying would get the
        same answer), :class:`ProtocolError` if its answer does not give one verdict for each.

        """
        report = ResultsReport(
            results=tuple(results), work=None if work is None else _work_request(self, work)
        )
        reply = await self._call(lambda: self._worker_path("/results"), report, _ResultsReceived)
        if len(reply.results) != len(results):
            raise ProtocolError("results: expected one answer for each result")
        verdicts = [Verdict(a.accepted is True, a.message) for a in reply.results]
        tasks = None
        if reply.tasks is not None:
            if reply.policy is not None:
                self._pacer.update(reply.policy)
            tasks = _tasks(reply.tasks)
        return ResultsAnswer(verdicts, tasks)

    # Work Alive

    async def alive(
        self,
        running: Sequence[RunningAttempt],
        evicted: Sequence[str],
        transfers: TransfersReport | None,
        waiting: Sequence[str] = (),
        suspended: str | None = None,
    ) -> list[str]:
        """One Work Alive (the next tick tries again); the attempts the coordinator cancels.

        ``evicted``: objects dropped from the cache, so the coordinator's catalog forgets them;
        ``transfers``: this worker's transfers since the last, for its load estimate (both
        optional); ``suspended``: why the worker computes nothing now (None: it computes).
        Raises :class:`WorkerLost` if the coordinator does not know this worker.
        """
        body = WorkAlive(
            running=tuple(running),
            evicted=tuple(evicted),
            transfers=transfers,
            waiting=tuple(waiting),
            suspended=suspended,
        )
        worker_id = self.worker_id
        try:
            reply = await self._coordinator.post_as(self._worker_path("/alive"), AliveAnswer, body)
        except ApiError as e:
            if _is_unknown_worker(e):
                self._declared_lost(worker_id)
                raise WorkerLost(str(e)) from None
            raise
        self._pacer.update(reply.policy)
        return list(reply.cancel)

    # Giveback

    async def give_back(self, attempts: Sequence[str]) -> None:
        """Hand ``attempts`` back to run elsewhere; one try (stopping does not wait long)."""
        await self._coordinator.post(self._worker_path("/giveback"), GiveBack(tuple(attempts)))

    async def checkpoint_saved(self, saved: CheckpointSaved) -> CheckpointRecorded:
        """Tell the coordinator an attempt's checkpoint is stored (its objects are)."""
        return await self._call(
            lambda: self._worker_path("/checkpoints"), saved, CheckpointRecorded
        )

    # Uploads plan

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan:
        """Where to store these objects (the warehouse of this worker's site, if it has one),
        and which of them some warehouse lacks."""
        # With the site: outputs go to the nearest warehouse.
        body = UploadsRequest(objects=tuple(refs), site=self.facts.site)
        plan = await self._call(lambda: f"{API_PREFIX}/objects/uploads", body, WireUploadPlan)
        missing = [(o.digest, o.capability) for o in plan.objects if o.capability and not o.present]
        return UploadPlan(plan.warehouse_url, missing)

    # Helpers

    async def _call(self, path: Callable[[], str], body: object, answer: type[M]) -> M:
        """POST to the coordinator until it answers; re-register if it lost us.

        ``path`` is computed at each try: registering again changes the worker id.
        """

        def log_retry(e: Exception, delay: float) -> None:
            self.log.info(
                "coordinator unavailable for {path}; trying again in {delay:.1f} s",
                path=path(),
                delay=delay,
            )

        return await retrying(
            self._reactor,
            lambda: self._post_as_worker(path, body, answer),
            self.retry_policy,
            _is_worth_retrying,
            log_retry,
        )

    async def _post_as_worker(self, path: Callable[[], str], body: object, answer: type[M]) -> M:
        """POST once registered; after a 404 unknown_worker, again once registered anew."""
        while True:
            await self._until_registered()
            worker_id = self.worker_id
            try:
                return await self._coordinator.post_as(path(), answer, body)
            except ApiError as e:
                if not _is_unknown_worker(e):
                    raise
                self._declared_lost(worker_id)

    def _worker_path(self, suffix: str) -> str:
        assert self.worker_id is not None
        return f"{API_PREFIX}/workers/{urllib.parse.quote(self.worker_id, safe='')}{suffix}"


class _WorkReceived(Message, frozen=True):
    """A Work Request's answer as the worker reads it: each task decoded on its own (see
    :func:`_tasks`)."""

    WHERE: ClassVar[str] = "work"

    tasks: tuple[msgspec.Raw, ...]
    policy: Policy


class _ResultsReceived(Message, frozen=True):
    """A Work Result's answer as the worker reads it (``tasks`` as in :class:`_WorkReceived`)."""

    WHERE: ClassVar[str] = "results"

    results: tuple[ResultAnswer, ...]
    tasks: tuple[msgspec.Raw, ...] | None = None
    policy: Policy | None = None


class _AttemptNamed(Message, frozen=True):
    attempt: str | None = None


def _work_request(link: CoordinatorLink, ask: WorkAsk) -> WorkRequest:
    """A Work Request (alone, or inside a Work Result)."""
    return WorkRequest(
        performance=link.facts.performance,
        free_slots=ask.slots,
        idle_slots=min(ask.idle, ask.slots),
        wait=ask.wait,
    )


def _tasks(raws: Sequence[msgspec.Raw]) -> Tasks:
    """The assignments of an answer's ``"tasks"``; one unreadable does not spoil the others."""
    tasks: Tasks = []
    for n, raw in enumerate(raws):
        try:
            tasks.append(decode(bytes(raw), Assignment, f"work.tasks[{n}]"))
        except ProtocolError as e:
            try:
                attempt = decode(bytes(raw), _AttemptNamed, "attempt").attempt
            except ProtocolError:
                attempt = None
            tasks.append(Unreadable(attempt, e))
    return tasks


def _is_unknown_worker(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status == 404 and error.code == "unknown_worker"


def _is_transient(error: ApiError) -> bool:
    """Busy, or a proxy in front of a coordinator that is restarting: worth trying again."""
    return error.status in (502, 503, 504)


def _is_worth_retrying(error: Exception) -> bool:
    """Not answered, or answered busy: the call may well succeed later."""
    return isinstance(error, Unreachable) or (isinstance(error, ApiError) and _is_transient(error))


def _take(items: list[Deferred[Any]]) -> list[Deferred[Any]]:
    taken = list(items)
    items.clear()
    return taken
