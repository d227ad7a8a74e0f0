"""The warehouse node as a service: listen, register with the coordinator, heartbeat.

``startService`` stays quick: it starts one background run (listen, then register, retrying
while the coordinator is unreachable, then heartbeat) whose progress callers follow through
``when_listening``/``when_registered``, and whose fatal errors (the port is taken, the token is
refused) through ``when_failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.http import Request
from twisted.web.server import Site

from xwch.batching import Coalescer
from xwch.errors import ApiError, Unreachable
from xwch.protocol.codec import ProtocolError
from xwch.protocol.objects import ObjectRef
from xwch.protocol.warehouse import (
    Heartbeat,
    HeartbeatAnswer,
    ObjectsStored,
    SessionCounts,
    WarehouseRegistered,
    WarehouseRegistration,
)
from xwch.protocol.wire import API_PREFIX, PROTOCOL_VERSION
from xwch.retry import RetryPolicy, equal_jitter, retrying
from xwch.tls import TlsFiles, TLSServerEndpoint, server_options

from .blocking import BlockingRunner, ThreadPoolRunner
from .metrics import MetricsAccess, MetricsResource
from .objects import ObjectStore
from .paced import PacedRequest
from .replication import Replicator
from .routes import Registration, WarehouseResource

log = Logger()

T = TypeVar("T")
M = TypeVar("M")


class Coordinator(Protocol):
    """What the warehouse needs of the coordinator's API (``xwch.http.JsonApi`` is one)."""

    async def post(self, path: str, body: object | None = None) -> Any: ...

    async def post_as(self, path: str, answer: type[M], body: object | None = None) -> M: ...


class _Latch(Generic[T]):
    """A result that comes once and that any number of callers may wait for."""

    def __init__(self) -> None:
        self._outcome: T | Failure | None = None
        self._done = False
        self._waiters: list[Deferred[T]] = []

    def wait(self) -> Deferred[T]:
        if self._done:
            if isinstance(self._outcome, Failure):
                return fail(self._outcome)
            return succeed(cast(T, self._outcome))
        d: Deferred[T] = Deferred()
        self._waiters.append(d)
        return d

    def fire(self, outcome: T | Failure) -> None:
        if self._done:
            return
        self._outcome, self._done = outcome, True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)


class _QuietSite(Site):
    """A Site that does not log a line per request: one per packet would drown the log."""

    noisy = False
    # Reads request bodies no faster than the warehouse's download cap.
    requestFactory = PacedRequest

    def log(self, request: Request) -> None:
        pass


def default_url(address: IAddress, scheme: str = "http") -> str:
    """``http://<interface>:<port>``, with 127.0.0.1 for a wildcard bind."""
    host = str(getattr(address, "host", "127.0.0.1"))
    port = int(getattr(address, "port", 0))
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def parse_registration(answer: WarehouseRegistered) -> Registration:
    """What the warehouse keeps of the coordinator's answer to ``POST /warehouses``."""
    if answer.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"the coordinator speaks protocol {answer.protocol}, this warehouse "
            f"{PROTOCOL_VERSION}: run the same XWCH release on both"
        )
    return Registration(
        warehouse_id=answer.warehouse_id,
        capability_key=answer.key(),
        heartbeat_interval=answer.heartbeat_interval,
    )


class WarehouseService(MultiService):
    """One warehouse node: its web front on ``listen`` and its life with the coordinator."""

    # Registration retries double from the base up to the max (docs: back off with jitter).
    REGISTER_BACKOFF_BASE = 1.0
    REGISTER_BACKOFF_MAX = 30.0
    # Threads for blocking file work (packet writes, commits): disks do not like many more.
    THREADS = 4

    def __init__(
        self,
        reactor: IReactorTime,
        store: ObjectStore,
        coordinator: Coordinator,
        public_url: str | None,
        site: str,
        listen: str,
        *,
        blocking: BlockingRunner | None = None,
        retry_policy: RetryPolicy | None = None,
        http: HTTPClient | None = None,
        metrics_access: MetricsAccess | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: the certificate to serve HTTPS with (None: plain HTTP)."""
        super().__init__()
        self._tls = tls
        self._reactor = reactor
        self.store = store
        self._coordinator = coordinator
        self._public_url = public_url.rstrip("/") if public_url else None
        self.site_name = site
        self._listen = listen
        self._retry_policy = retry_policy or equal_jitter(
            self.REGISTER_BACKOFF_BASE, self.REGISTER_BACKOFF_MAX
        )
        self._pool: ThreadPool | None = None
        if blocking is None:
            self._pool = ThreadPool(0, self.THREADS, name="xwch-warehouse-files")
            # A real reactor provides IReactorFromThreads too; tests inject ``blocking``.
            blocking = ThreadPoolRunner(cast(IReactorFromThreads, reactor), self._pool)
        self.resource = WarehouseResource(store, self, reactor, blocking)
        self.resource.putChild(b"metrics", MetricsResource(self.resource, metrics_access))
        if http is not None:
            self.resource.replicator = Replicator(
                reactor, store, http, self._report_copy, pacer=self.resource.network.pacer
            )
        self.web_site = _QuietSite(self.resource)
        self.port: IListeningPort | None = None
        self.url: str | None = None
        self._listening: _Latch[str] = _Latch()
        self._registered: _Latch[Registration] = _Latch()
        self._failed: _Latch[None] = _Latch()
        self._run: Deferred[None] | None = None
        self._heartbeat: LoopingCall | None = None
        self._stored_reports: Coalescer[ObjectRef] = Coalescer(self._send_objects_stored)

    async def _report_copy(self, digest: str, size: int) -> None:
        await self.objects_stored([ObjectRef(digest=digest, size=size)])

    # -- what callers follow ---------------------------------------------------------------

    def when_listening(self) -> Deferred[str]:
        """Fires with the public URL once the port is bound."""
        return self._listening.wait()

    def when_registered(self) -> Deferred[Registration]:
        """Fires once the coordinator has accepted this warehouse."""
        return self._registered.wait()

    def when_failed(self) -> Deferred[None]:
        """Fails with the error that stopped the service from working; never succeeds."""
        return self._failed.wait()

    # -- the service -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if self._pool is not None:
            self._pool.start()
        self._run = Deferred.fromCoroutine(self._start())
        self._run.addErrback(self._fatal)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await maybeDeferred(super().stopService)
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._run is not None:
            self._run.cancel()
        if self.port is not None:
            await maybeDeferred(self.port.stopListening)
        if self._pool is not None:
            # Waits for a packet write or commit in progress: it is never left half done.
            self._pool.stop()

    def _fatal(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(CannotListenError, ApiError, ProtocolError):
            # Expected ways to fail (port taken, token refused): the message says it all.
            log.critical("the warehouse cannot work: {error}", error=failure.value)
        else:
            log.failure("the warehouse cannot work", failure)
        # Whoever waits for a step that will now never come learns why.
        self._listening.fire(failure)
        self._registered.fire(failure)
        self._failed.fire(failure)

    async def _start(self) -> None:
        endpoint = serverFromString(self._reactor, self._listen)
        if self._tls is not None:
            endpoint = TLSServerEndpoint(endpoint, server_options(self._tls))
        port: IListeningPort = await endpoint.listen(self.web_site)
        self.port = port
        scheme = "http" if self._tls is None else "https"
        self.url = self._public_url or default_url(port.getHost(), scheme)
        log.info("listening on {url}", url=self.url)
        self._listening.fire(self.url)
        registration = await self._register_until_accepted()
        self._registered.fire(registration)
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._reactor
        done = self._heartbeat.start(registration.heartbeat_interval, now=False)
        done.addErrback(lambda f: log.failure("heartbeats stopped", f))

    # -- registration and heartbeat ----------------------------------------------------------

    async def _register_until_accepted(self) -> Registration:
        def log_retry(error: Exception, delay: float) -> None:
            log.warn(
                "cannot register with the coordinator ({reason}); trying again in {delay:.1f} s",
                reason=str(error),
                delay=delay,
            )

        return await retrying(
            self._reactor, self._register, self._retry_policy, _worth_retrying, log_retry
        )

    async def _register(self) -> Registration:
        assert self.url is not None  # listening
        answer = await self._coordinator.post_as(
            f"{API_PREFIX}/warehouses",
            WarehouseRegistered,
            WarehouseRegistration(
                url=self.url,
                site=self.site_name,
                capacity=self.store.capacity_bytes(),
                free=self.store.free_bytes(),
                protocol=PROTOCOL_VERSION,
            ),
        )
        registration = parse_registration(answer)
        # The coordinator's catalog learns exactly what is here: a warehouse restarted on a
        # new disk must not be believed to hold what it held before.
        inventory = self._inventory()
        await self._coordinator.post(
            f"{API_PREFIX}/warehouses/{registration.warehouse_id}/objects",
            ObjectsStored(objects=tuple(inventory), complete=True),
        )
        self.resource.registration = registration
        log.info(
            "registered as {id} with {n} objects", id=registration.warehouse_id, n=len(inventory)
        )
        return registration

    def _inventory(self) -> list[ObjectRef]:
        # Listing a folder, once per registration: cheap enough for the reactor thread.
        return [ObjectRef(digest=d, size=n) for d, n in self.store.inventory()]

    def _beat(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._send_heartbeat())
        # An unexpected error is logged, not raised: it would stop the LoopingCall for good.
        d.addErrback(lambda f: log.failure("heartbeat failed", f))
        return d

    async def _send_heartbeat(self) -> None:
        registration = self.resource.registration
        assert registration is not None
        try:
            network = self.resource.network
            answer = await self._coordinator.post_as(
                f"{API_PREFIX}/warehouses/{registration.warehouse_id}/heartbeat",
                HeartbeatAnswer,
                Heartbeat(
                    capacity=self.store.capacity_bytes(),
                    free=self.store.free_bytes(),
                    # Traffic and sessions since the last beat, for the communication manager.
                    transfers=network.meter.take_report(),
                    sessions=SessionCounts(**network.sessions.status()),
                ),
            )
            # Its answer's policy sets how many transfer sessions this warehouse serves.
            self.resource.network.apply_answer(answer)
        except ApiError as e:
            if e.status != 404:
                log.warn("heartbeat refused: {error}", error=e)
                return
            # The coordinator has forgotten us (its database was reset): register again; the
            # same URL keeps its id where it can.
            log.warn("the coordinator does not know this warehouse; registering again")
            try:
                registration = await self._register()
            except (ApiError, Unreachable, ProtocolError) as again:
                log.warn("registering again failed: {error}", error=again)
                return
            if self._heartbeat is not None:
                self._heartbeat.interval = registration.heartbeat_interval
        except Unreachable as e:
            log.warn("heartbeat not delivered: {error}", error=e)
        except ProtocolError as e:
            log.warn("the heartbeat's answer does not fit: {error}", error=e)

    # -- the catalog, for the web front ------------------------------------------------------

    async def objects_stored(self, refs: Sequence[ObjectRef]) -> None:
        """Tell the coordinator these objects are stored here (with any others stored meanwhile:
        on short tasks a request for each output cost the coordinator a tenth of its time)."""
        await self._stored_reports.submit(refs)

    async def _send_objects_stored(self, refs: Sequence[ObjectRef]) -> None:
        registration = self.resource.registration
        if registration is None:
            raise Unreachable("not registered with the coordinator yet")
        await self._coordinator.post(
            f"{API_PREFIX}/warehouses/{registration.warehouse_id}/objects",
            ObjectsStored(objects=tuple(refs)),
        )


def _worth_retrying(error: Exception) -> bool:
    """Unreachable, or busy or broken for now; anything else (a refused token) will not get
    better by retrying."""
    if isinstance(error, ApiError):
        return error.status >= 500  # busy (503) or broken for now
    return isinstance(error, Unreachable)
