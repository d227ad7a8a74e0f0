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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xwch.errors import ApiError, Unreachable, XwchError
from xwch.protocol import (
    API_PREFIX,
    CACHE_PREFIX,
    CACHE_REPORT_MAX,
    Assignment,
    AttemptResult,
    HostFacts,
    ObjectRef,
    Policy,
    ProtocolError,
    RunningAttempt,
    TransfersReport,
    require_digest,
    require_object,
)
from xwch.retry import RetryPolicy, equal_jitter, retrying

from .sites import Nearest


class Coordinator(Protocol):
    """What the link needs of the coordinator's API (``xwch.http.JsonApi`` is one)."""

    async def post(self, path: str, body: object | None = None) -> Any: ...


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
    Work Request (None: a coordinator that does not assign there, or one too busy to)."""

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
    ) -> None:
        self._reactor = reactor
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
            return isinstance(e, (Unreachable, ApiError, ProtocolError))

        def log_retry(e: Exception, delay: float) -> None:
            self.log.warn(
                "cannot register: {error}; trying again in {delay:.1f} s", error=e, delay=delay
            )

        try:
            reply, (worker_id, interval) = await retrying(
                self._reactor, self._send_registration, self.retry_policy, worth_retrying, log_retry
            )
        except ApiError as e:
            refused = RegistrationRefused(f"the coordinator refused to register: {e}")
            self._refused = refused
            for d in _take(self._first_registration):
                d.errback(refused)
            raise refused from None
        self.worker_id = worker_id
        self.alive_interval = interval
        self.lost = False
        self._registrations += 1
        self._apply_policy(reply)
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

    async def _send_registration(self) -> tuple[Mapping[str, Any], tuple[str, float]]:
        reply = require_object(
            await self._coordinator.post(
                f"{API_PREFIX}/workers", self._registration_facts().to_json()
            ),
            "register",
        )
        return reply, _registration(reply)

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
        """The host facts, with what the cache holds: the scheduler sends work to its data."""
        if self._cache_contents is None:
            return self.facts
        cached = self._cache_contents()[:CACHE_REPORT_MAX]
        return replace(self.facts, cached=tuple(sorted({d[:CACHE_PREFIX] for d in cached})))

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
            answer = await self._coordinator.post(self._worker_path("/work"), _work_body(self, ask))
        except ApiError as e:
            if _is_unknown_worker(e):
                self._declared_lost(worker_id)
                raise WorkerLost(str(e)) from None
            raise
        reply = require_object(answer, "work")
        tasks = reply.get("tasks", [])
        if not isinstance(tasks, list):
            raise ProtocolError("work.tasks: expected a list")
        self._apply_policy(reply)
        return _tasks(tasks)

    # Work Result

    async def send_results(
        self, results: Sequence[AttemptResult], work: WorkAsk | None, batched: bool = True
    ) -> ResultsAnswer:
        """Work Result of ``results``, with a Work Request if ``work``; the coordinator's verdict
        on each, and the tasks it assigned.

        Retried until the coordinator answers; a result is never dropped. Raises
        :class:`ApiError` if it refuses them (an answer, not a silence: retrying would get the
        same answer), :class:`ProtocolError` if its answer does not give one verdict for each.

        ``batched=False`` (older coordinators, to go with a protocol version): one result, in
        the form of coordinators from before batches (ResultReporter decides when).
        """
        body: dict[str, Any]
        if batched:
            body = {"results": [r.to_json() for r in results]}
        else:
            [result] = results
            body = result.to_json()
        if work is not None:
            body["work"] = _work_body(self, work)
        reply = await self._call(lambda: self._worker_path("/results"), body)
        if batched:
            answers = reply.get("results") if isinstance(reply, dict) else None
            if not isinstance(answers, list) or len(answers) != len(results):
                raise ProtocolError("results: expected one answer for each result")
            verdicts = [
                Verdict(
                    accepted=isinstance(a, dict) and a.get("accepted") is True,
                    refused=a.get("message") if isinstance(a, dict) else None,
                )
                for a in answers
            ]
        else:
            verdicts = [Verdict(isinstance(reply, dict) and reply.get("accepted") is True)]
        return ResultsAnswer(verdicts, self._tasks_of(reply) if work is not None else None)

    def _tasks_of(self, reply: object) -> Tasks | None:
        """The tasks a Work Result's answer carries, as a Work Request's answer's.

        None: no ``"tasks"`` (a coordinator that predates them (older coordinators, to go with
        a protocol version), or one too busy to assign).
        """
        tasks = reply.get("tasks") if isinstance(reply, dict) else None
        if not isinstance(tasks, list):
            return None
        self._apply_policy(reply)
        return _tasks(tasks)

    # Work Alive

    async def alive(
        self,
        running: Sequence[RunningAttempt],
        evicted: Sequence[str],
        transfers: TransfersReport | None,
    ) -> list[str]:
        """One Work Alive (the next tick tries again); the attempts the coordinator cancels.

        ``evicted``: objects dropped from the cache, so the coordinator's catalog forgets them;
        ``transfers``: this worker's transfers since the last, for its load estimate (both
        optional). Raises :class:`WorkerLost` if the coordinator does not know this worker.
        """
        body: dict[str, Any] = {"running": [r.to_json() for r in running]}
        if evicted:
            body["evicted"] = list(evicted)
        if transfers is not None:
            body["transfers"] = transfers.to_json()
        worker_id = self.worker_id
        try:
            reply = require_object(
                await self._coordinator.post(self._worker_path("/alive"), body), "alive"
            )
        except ApiError as e:
            if _is_unknown_worker(e):
                self._declared_lost(worker_id)
                raise WorkerLost(str(e)) from None
            raise
        self._apply_policy(reply)
        cancel = reply.get("cancel", [])
        return [a for a in cancel if isinstance(a, str)] if isinstance(cancel, list) else []

    # Giveback

    async def give_back(self, attempts: Sequence[str]) -> None:
        """Hand ``attempts`` back to run elsewhere; one try (stopping does not wait long)."""
        await self._coordinator.post(self._worker_path("/giveback"), {"attempts": attempts})

    # Uploads plan

    async def upload_plan(self, refs: Sequence[ObjectRef]) -> UploadPlan:
        """Where to store these objects (the warehouse of this worker's site, if it has one),
        and which of them some warehouse lacks."""
        body: dict[str, Any] = {"objects": [r.to_json() for r in refs]}
        if self.facts.site is not None:
            body["site"] = self.facts.site  # outputs go to the nearest warehouse
        return _upload_plan(await self._call(lambda: f"{API_PREFIX}/objects/uploads", body))

    # Helpers

    async def _call(self, path: Callable[[], str], body: object) -> Any:
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
            lambda: self._post_as_worker(path, body),
            self.retry_policy,
            _is_worth_retrying,
            log_retry,
        )

    async def _post_as_worker(self, path: Callable[[], str], body: object) -> Any:
        """POST once registered; after a 404 unknown_worker, again once registered anew."""
        while True:
            await self._until_registered()
            worker_id = self.worker_id
            try:
                return await self._coordinator.post(path(), body)
            except ApiError as e:
                if not _is_unknown_worker(e):
                    raise
                self._declared_lost(worker_id)

    def _worker_path(self, suffix: str) -> str:
        assert self.worker_id is not None
        return f"{API_PREFIX}/workers/{urllib.parse.quote(self.worker_id, safe='')}{suffix}"

    def _apply_policy(self, reply: object) -> None:
        doc = reply.get("policy") if isinstance(reply, dict) else None
        if doc is None:
            return
        try:
            self._pacer.update(Policy.from_json(doc))
        except ProtocolError as e:
            self.log.warn("ignoring a malformed policy: {error}", error=e)


def _work_body(link: CoordinatorLink, ask: WorkAsk) -> dict[str, Any]:
    """A Work Request's body (alone, or inside a Work Result's)."""
    body: dict[str, Any] = {
        "performance": link.facts.performance,
        "free_slots": ask.slots,
        "idle_slots": min(ask.idle, ask.slots),
    }
    if ask.wait > 0:
        body["wait"] = ask.wait
    return body


def _tasks(docs: Sequence[object]) -> Tasks:
    """The assignments of an answer's ``"tasks"``; one unreadable does not spoil the others."""
    tasks: Tasks = []
    for n, doc in enumerate(docs):
        try:
            tasks.append(Assignment.from_json(doc, f"work.tasks[{n}]"))
        except ProtocolError as e:
            attempt = doc.get("attempt") if isinstance(doc, dict) else None
            tasks.append(Unreadable(attempt if isinstance(attempt, str) else None, e))
    return tasks


def _is_unknown_worker(error: Exception) -> bool:
    return isinstance(error, ApiError) and error.status == 404 and error.code == "unknown_worker"


def _is_transient(error: ApiError) -> bool:
    """Busy, or a proxy in front of a coordinator that is restarting: worth trying again."""
    return error.status in (502, 503, 504)


def _is_worth_retrying(error: Exception) -> bool:
    """Not answered, or answered busy: the call may well succeed later."""
    return isinstance(error, Unreachable) or (isinstance(error, ApiError) and _is_transient(error))


def _registration(reply: Mapping[str, Any]) -> tuple[str, float]:
    """The worker id and the Work Alive period of a Register Request's answer."""
    worker_id = reply.get("worker_id")
    interval = reply.get("alive_interval")
    if not isinstance(worker_id, str) or not worker_id:
        raise ProtocolError("register.worker_id: expected a string")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ProtocolError("register.alive_interval: expected a positive number")
    return worker_id, float(interval)


def _upload_plan(doc: object) -> UploadPlan:
    """The warehouse URL and the (digest, put capability) of the objects to upload there."""
    plan = require_object(doc, "uploads")
    warehouse = require_object(plan.get("warehouse"), "uploads.warehouse")
    url = warehouse.get("url")
    objects = plan.get("objects")
    if not isinstance(url, str) or not isinstance(objects, list):
        raise ProtocolError("uploads: expected a warehouse url and a list of objects")
    missing: list[tuple[str, str]] = []
    for n, item in enumerate(objects):
        entry = require_object(item, f"uploads.objects[{n}]")
        digest = require_digest(entry.get("digest"), f"uploads.objects[{n}].digest")
        if entry.get("present") is True:
            continue
        capability = entry.get("capability")
        if not isinstance(capability, str):
            raise ProtocolError(f"uploads.objects[{n}].capability: expected a string")
        missing.append((digest, capability))
    return UploadPlan(url, missing)


def _take(items: list[Deferred[Any]]) -> list[Deferred[Any]]:
    taken = list(items)
    items.clear()
    return taken
