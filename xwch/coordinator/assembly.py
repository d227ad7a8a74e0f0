"""Builds the coordinator: the store, the four managers and the web front, in dependency order.

``make_coordinator`` does the asynchronous preparation first (schema migration, recovery of
running jobs, workers and catalog from the store), then returns a service tree whose
``startService`` is quick: it starts timers and listens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from xwch.coordinator.api import CoordinatorApi, map_error
from xwch.coordinator.auth import Authenticator
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.communication import CommunicationManager
from xwch.coordinator.copies import CopyRequest, copy_requester
from xwch.coordinator.endings import JobEndings
from xwch.coordinator.estimates import TransferEstimates
from xwch.coordinator.groups import GroupLocks
from xwch.coordinator.locality import LocalityScheduler
from xwch.coordinator.members import DEFAULT_LEASE, Membership
from xwch.coordinator.prefetch import Prefetcher
from xwch.coordinator.scanner import Scanner
from xwch.coordinator.scheduler import POLICY_FIFO, POLICY_LOCALITY, FifoScheduler, Scheduler
from xwch.coordinator.tasks import TasksManager
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import JsonRequest, JsonRouter
from xwch.coordinator.workers import WorkersManager
from xwch.dashboard.assembly import Dashboard, make_dashboard
from xwch.http import make_http_client
from xwch.protocol.wire import API_PREFIX
from xwch.store import tokens
from xwch.store.database import Database


@dataclass(frozen=True)
class CoordinatorConfig:
    db_url: str
    listen: str = "tcp:8750"
    alive_interval: float | None = None
    alive_timeout: float | None = None
    # How many warehouses should hold each object (capped by how many there are).
    replicas: int = 2
    scan_interval: float | None = None
    heartbeat_interval: float | None = None
    warehouse_timeout: float | None = None
    # The scheduling policy: "locality" (data locality, speed, fair share) or "fifo".
    scheduler: str = POLICY_LOCALITY
    # Default transfer rates (bytes/s) within a site and between sites, until measured.
    site_rate: float | None = None
    wan_rate: float | None = None
    # The URL other parts reach this coordinator at (default: the address it listens on).
    public_url: str | None = None
    # How long a silent member of the platform keeps what it holds.
    lease: float = DEFAULT_LEASE
    # How many logical groups of workers (None: one per live member).
    groups: int | None = None


class StoreService(Service):
    """Owns the database threads: first started, last stopped."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def startService(self) -> None:
        self.db.start()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.db.stop()


class HeldRequests(Service):
    """Answers, when the coordinator stops, the requests held open until something happens:
    Work Requests waiting for work, polls waiting for a job's end."""

    def __init__(self, waiting: WorkWaitingRoom, endings: JobEndings) -> None:
        self._waiting = waiting
        self._endings = endings

    def stopService(self) -> None:
        super().stopService()
        self._waiting.close()
        self._endings.close()


class QuietSite(Site):
    """A site that does not log every request: workers' signals would drown the log."""

    requestFactory = JsonRequest

    def log(self, request: object) -> None:
        pass


class WebService(Service):
    """Listens on an endpoint description and serves the API; tells the bound address."""

    log = Logger()

    def __init__(self, reactor: Any, description: str, root: Resource) -> None:
        self._reactor = reactor
        self._description = description
        self.root = root
        self._site = QuietSite(root)
        self._site.noisy = False
        self.port: IListeningPort | None = None
        # Listened or failed to: (port, None) or (None, failure), once known.
        self._outcome: tuple[IListeningPort | None, Failure | None] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self._reactor, self._description)
        d = endpoint.listen(self._site)

        def listening(port: IListeningPort) -> None:
            self.port = port
            self._settle((port, None))

        d.addCallbacks(listening, lambda failure: self._settle((None, failure)))

    def when_listening(self) -> Deferred[IListeningPort]:
        """Fires with the port once listening, or fails (CannotListenError) if it cannot: a
        new Deferred for each caller, so none sees what another's callbacks made of it."""
        d: Deferred[IListeningPort] = Deferred()
        if self._outcome is None:
            self._waiters.append(d)
        else:
            self._fire(d, self._outcome)
        return d

    def _settle(self, outcome: tuple[IListeningPort | None, Failure | None]) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._fire(d, outcome)

    @staticmethod
    def _fire(
        d: Deferred[IListeningPort], outcome: tuple[IListeningPort | None, Failure | None]
    ) -> None:
        port, failure = outcome
        if failure is not None:
            d.errback(failure)
        else:
            assert port is not None
            d.callback(port)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            return cast("Deferred[None]", self.port.stopListening())
        return None

    def url(self) -> str:
        assert self.port is not None
        address = self.port.getHost()
        host = getattr(address, "host", "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{getattr(address, 'port', 0)}"


class Coordinator(MultiService):
    """The coordinator's service tree, with handles on its parts for tests and tools."""

    def __init__(
        self,
        db: Database,
        tasks: TasksManager,
        workers: WorkersManager,
        scheduler: Scheduler,
        communication: CommunicationManager,
        catalog: Catalog,
        scanner: Scanner,
        web: WebService,
        api: CoordinatorApi,
        membership: Membership,
        groups: GroupLocks,
        public_url: str | None = None,
        dashboard: Dashboard | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.tasks = tasks
        self.workers = workers
        self.scheduler = scheduler
        self.communication = communication
        self.catalog = catalog
        self.scanner = scanner
        self.web = web
        self.api = api
        self.membership = membership
        self.groups = groups
        self.public_url = public_url
        self.dashboard = dashboard
        self.waiting = api.waiting
        self.root = web.root
        # Dependency order: the store first in, last out.
        StoreService(db).setServiceParent(self)
        workers.setServiceParent(self)
        scanner.setServiceParent(self)
        web.setServiceParent(self)
        # Joins once listening; leaves before the web front stops answering.
        membership.setServiceParent(self)
        groups.setServiceParent(self)
        # Stopped first: requests held open are answered before the rest stops.
        HeldRequests(api.waiting, tasks.endings).setServiceParent(self)
        if dashboard is not None:
            # Its event streams are held requests too: ended as the coordinator stops.
            dashboard.live.setServiceParent(self)

    def url(self) -> str:
        return self.public_url or self.web.url()

    def stopService(self) -> Deferred[None]:
        # The member leaves the store before anything stops: MultiService stops its children
        # all at once, and a write asked once the store's threads are stopping never ends.
        # Its groups first, free at once for the others to take.
        left = maybeDeferred(self.groups.stopService)
        left.addBoth(lambda _: self.membership.stopService())
        return cast("Deferred[None]", left.addBoth(lambda _: MultiService.stopService(self)))


def make_scheduler(
    config: CoordinatorConfig, catalog: Catalog, communication: CommunicationManager
) -> Scheduler:
    if config.scheduler == POLICY_FIFO:
        return FifoScheduler()
    if config.scheduler != POLICY_LOCALITY:
        raise ValueError(f"unknown scheduling policy {config.scheduler!r}")
    estimates = TransferEstimates(
        catalog, communication.estimator.estimate, config.site_rate, config.wan_rate
    )
    scheduler = LocalityScheduler(estimates)
    catalog.on_stored.append(scheduler.object_stored)
    return scheduler


async def make_coordinator(
    config: CoordinatorConfig,
    reactor: IReactorTime,
    db: Database | None = None,
    request_copy: CopyRequest | None = None,
) -> Coordinator:
    """Prepare the store and memory, and build the (not yet started) service tree."""
    db = db or Database(cast(Any, reactor), config.db_url)
    db.start()
    try:
        await db.migrate()
        key = await db.read(tokens.capability_key_thd)
        catalog = Catalog(reactor, db, key, config.heartbeat_interval, config.warehouse_timeout)
        await catalog.load()
        communication = CommunicationManager(reactor=reactor)
        scheduler = make_scheduler(config, catalog, communication)
        tasks = TasksManager(reactor, db, catalog, scheduler)
        await tasks.recover()
        workers = WorkersManager(
            reactor, db, tasks, communication, config.alive_interval, config.alive_timeout
        )
        await workers.load()
    except BaseException:
        db.stop()
        raise
    if request_copy is None:
        request_copy = copy_requester(make_http_client(cast(Any, reactor)))
    if isinstance(scheduler, LocalityScheduler):
        tasks.prefetcher = Prefetcher(reactor, catalog, request_copy, scheduler.site_slots)
    scanner = Scanner(
        reactor, tasks, workers, catalog, request_copy, config.replicas, config.scan_interval
    )
    waiting = WorkWaitingRoom(reactor, lambda: len(scheduler))
    tasks.on_ready.append(waiting.work_appeared)
    api = CoordinatorApi(db, tasks, workers, catalog, communication, waiting)
    api.scanner = scanner
    authenticator = Authenticator(db)
    dashboard = make_dashboard(
        reactor, api, db, tasks, workers, catalog, communication, authenticator
    )
    root = Resource()
    routes = dashboard.observer.wrap([*api.routes(), *dashboard.routes])
    router = JsonRouter(API_PREFIX, routes, authenticator, map_error)
    root.putChild(b"api", router)
    root.putChild(b"dashboard", dashboard.resource)
    root.putChild(b"metrics", dashboard.metrics_resource)
    web = WebService(cast(IReactorCore, reactor), config.listen, root)
    membership = Membership(
        reactor,
        db,
        web.when_listening,
        lambda: config.public_url or web.url(),
        lambda: (len(workers.workers), tasks.counts().get("running", 0)),
        config.lease,
    )
    api.membership = membership
    groups = GroupLocks(reactor, db, membership, web.when_listening, config.groups)
    api.groups = groups
    return Coordinator(
        db,
        tasks,
        workers,
        scheduler,
        communication,
        catalog,
        scanner,
        web,
        api,
        membership,
        groups,
        config.public_url,
        dashboard,
    )
