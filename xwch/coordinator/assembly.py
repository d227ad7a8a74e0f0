"""Builds the coordinator: the store, the four managers and the web front, in dependency order.

``make_coordinator`` does the asynchronous preparation first (schema migration and, for a
store's only coordinator, the recovery of running jobs, workers and catalog from the store:
``managers.py``), then returns a service tree whose ``startService`` is quick: it starts timers
and listens. On a PostgreSQL store, which several coordinators may share, the managers are
built for the groups this member holds instead, and again whenever that set changes
(``serving.py``); ``routing.py`` sends each request to the member it belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorCore,
    IReactorProcess,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from xwch.coordinator.api import CoordinatorApi
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.checkpoints import DropRequest
from xwch.coordinator.communication import CommunicationManager
from xwch.coordinator.copies import CopyRequest, copy_requester
from xwch.coordinator.drops import drop_requester
from xwch.coordinator.groups import GroupLocks
from xwch.coordinator.lending import WorkerLending
from xwch.coordinator.managers import Managers, ManagersConfig, make_managers
from xwch.coordinator.members import DEFAULT_LEASE, Membership
from xwch.coordinator.routing import Routing
from xwch.coordinator.scanner import Scanner
from xwch.coordinator.scheduler import Scheduler
from xwch.coordinator.serving import Serving
from xwch.coordinator.tasks import TasksManager
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import JsonRequest
from xwch.coordinator.worker_starter import WorkerStarter, live_workers
from xwch.coordinator.workers import WorkersManager
from xwch.detached import launcher
from xwch.http import make_http_client
from xwch.protocol.states import TaskStatus
from xwch.store import group_locks, tokens
from xwch.store.database import Database
from xwch.store.group_locks import Fences
from xwch.store.notices import PostgresNotices
from xwch.tls import TlsFiles, TLSServerEndpoint, fingerprint, https_policy, server_options


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig(ManagersConfig):
    """Everything a coordinator is started with: the managers' settings and its own."""

    db_url: str
    listen: str = "tcp:8750"
    # The URL other parts reach this coordinator at (default: the address it listens on).
    public_url: str | None = None
    # How long a silent member of the platform keeps what it holds.
    lease: float = DEFAULT_LEASE
    # How many logical groups of workers (None: one per live member; see groups.py).
    groups: int | None = None
    # Workers started while the platform has fewer live ones (see worker_starter.py): how
    # many are wanted, the shell command that starts one, the least time between two starts,
    # and the file the command's output goes to.
    min_workers: int = 0
    worker_command: str | None = None
    worker_start_interval: float | None = None
    worker_log: Path | None = None
    # The certificate it serves HTTPS with (None: plain HTTP); see xwch.tls.
    tls: TlsFiles | None = None


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


class QuietSite(Site):
    """A site that does not log every request: workers' signals would drown the log."""

    requestFactory = JsonRequest

    def log(self, request: object) -> None:
        pass


class WebService(Service):
    """Listens on an endpoint description and serves the API; tells the bound address."""

    log = Logger()

    def __init__(
        self, reactor: Any, description: str, root: Resource, tls: TlsFiles | None = None
    ) -> None:
        self._reactor = reactor
        self._description = description
        self._tls = tls
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
        if self._tls is not None:
            endpoint = TLSServerEndpoint(endpoint, server_options(self._tls))
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
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{host}:{getattr(address, 'port', 0)}"


class Standby(Exception):
    """This member serves nothing now: it holds no group (other members hold them all)."""


class Coordinator(MultiService):
    """The coordinator's service tree, with handles on its parts for tests and tools.

    The managers (tasks, workers, scheduler...) are those of this member while it serves the
    platform, or those of the groups it holds on a store shared by several; a member holding
    no group has none (see ``serving.py``).
    """

    def __init__(
        self,
        db: Database,
        web: WebService,
        membership: Membership,
        groups: GroupLocks,
        serving: Serving | None,
        public_url: str | None = None,
        notices: PostgresNotices | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.web = web
        self.membership = membership
        self.groups = groups
        self.serving = serving
        self.public_url = public_url
        self.root = web.root
        self.managers: Managers | None = None
        # Dependency order: the store first in, last out.
        StoreService(db).setServiceParent(self)
        if notices is not None:
            notices.setServiceParent(self)
        web.setServiceParent(self)
        # Joins once listening; leaves before the web front stops answering.
        membership.setServiceParent(self)
        groups.setServiceParent(self)
        if serving is not None:
            serving.setServiceParent(self)

    def serve(self, managers: Managers | None) -> None:
        """Attach the managers that serve the platform (None: stand by)."""
        if managers is not None:
            managers.api.membership = self.membership
            managers.api.groups = self.groups
        self.managers = managers

    def _serving(self) -> Managers:
        if self.managers is None:
            raise Standby("this coordinator holds no group now: other members serve the platform")
        return self.managers

    @property
    def tasks(self) -> TasksManager:
        return self._serving().tasks

    @property
    def workers(self) -> WorkersManager:
        return self._serving().workers

    @property
    def scheduler(self) -> Scheduler:
        return self._serving().scheduler

    @property
    def communication(self) -> CommunicationManager:
        return self._serving().communication

    @property
    def catalog(self) -> Catalog:
        return self._serving().catalog

    @property
    def scanner(self) -> Scanner:
        return self._serving().scanner

    @property
    def api(self) -> CoordinatorApi:
        return self._serving().api

    @property
    def waiting(self) -> WorkWaitingRoom:
        return self._serving().waiting

    def url(self) -> str:
        return self.public_url or self.web.url()

    def startService(self) -> None:
        super().startService()
        if self.serving is None and self.managers is not None:
            self.managers.startService()

    def stopService(self) -> Deferred[None]:
        # The member leaves the store before anything stops: MultiService stops its children
        # all at once, and a write asked once the store's threads are stopping never ends.
        # Its managers first (they decide nothing more; requests held open are answered), and
        # the writes they asked for committed, all still under its groups' fences; then its
        # groups, free at once for the others to take.
        left: Deferred[object] = succeed(None)
        if self.serving is not None:
            serving = self.serving
            left.addBoth(lambda _: serving.stopService())
            left.addBoth(lambda _: self.db.write(group_locks.nothing_thd))
        left.addBoth(lambda _: self.groups.stopService())
        left.addBoth(lambda _: self.membership.stopService())
        if self.serving is None and self.managers is not None:
            managers = self.managers
            # Requests held open are answered before the rest stops.
            left.addBoth(lambda _: managers.stopService())
        return cast("Deferred[None]", left.addBoth(lambda _: MultiService.stopService(self)))


class ServedByManagers(Resource):
    """A resource of this member's managers, or 503 while it has none (it holds no group)."""

    isLeaf = True

    def __init__(self, coordinator: Coordinator, pick: Callable[[Managers], Resource]) -> None:
        super().__init__()
        self._coordinator = coordinator
        self._pick = pick

    def render(self, request: Request) -> bytes | int:
        managers = self._coordinator.managers
        if managers is None:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"this coordinator holds no group now: see another member\n"
        return self._pick(managers).render(request)  # type: ignore[no-any-return]


def _load(coordinator: Coordinator | None) -> tuple[int, int]:
    """(workers known, attempts running) of a member, told at each renewal."""
    managers = None if coordinator is None else coordinator.managers
    if managers is None:
        return 0, 0
    return len(managers.workers.workers), managers.tasks.counts().get(TaskStatus.RUNNING, 0)


async def make_coordinator(
    config: CoordinatorConfig,
    reactor: IReactorTime,
    db: Database | None = None,
    request_copy: CopyRequest | None = None,
    request_drop: DropRequest | None = None,
) -> Coordinator:
    """Prepare the store (and, for the store's only coordinator, the managers from it), and
    build the (not yet started) service tree."""
    db = db or Database(cast(Any, reactor), config.db_url)
    db.start()
    # Several coordinators may share a PostgreSQL store; SQLite has one (store_lock.py).
    shared = db.engine.dialect.name == "postgresql"
    # Warehouses serve the platform's certificate (xwch.tls): the coordinator pins its own.
    pinned = None if config.tls is None else https_policy(fingerprint(config.tls))
    # Tests that fake copies and give no deletions get none (their clock has no network).
    http = make_http_client(cast(Any, reactor), tls=pinned) if request_copy is None else None
    copy = request_copy or copy_requester(cast(Any, http))
    drop = request_drop or (drop_requester(http) if http is not None else None)
    try:
        await db.migrate()
        key = await db.read(tokens.capability_key_thd)
        managers = (
            None
            if shared
            else await make_managers(config, reactor, db, key, copy, request_drop=drop)
        )
    except BaseException:
        db.stop()
        raise
    root = Resource()
    web = WebService(cast(IReactorCore, reactor), config.listen, root, config.tls)
    holder: list[Coordinator] = []
    # Members of one store tell each other of groups let go, and of joining and leaving.
    notices = PostgresNotices(reactor, db) if shared else None
    membership = Membership(
        reactor,
        db,
        web.when_listening,
        lambda: config.public_url or web.url(),
        lambda: _load(holder[0] if holder else None),
        config.lease,
        notices,
    )
    groups = GroupLocks(reactor, db, membership, web.when_listening, config.groups, notices)
    serving = None
    if shared:

        def build(fences: Fences) -> Awaitable[Managers]:
            return make_managers(config, reactor, db, key, copy, fences, drop)

        serving = Serving(reactor, membership, groups, build, lambda m: holder[0].serve(m))
        # A request about a group with no live holder waits: at most a lease and a little.
        root.putChild(b"api", Routing(reactor, serving, db, lambda: config.lease + 5.0))
    else:
        assert managers is not None
        root.putChild(b"api", managers.router)
    coordinator = Coordinator(db, web, membership, groups, serving, config.public_url, notices)
    if serving is not None:
        WorkerLending(reactor, db, lambda: coordinator.managers, groups.locks).setServiceParent(
            coordinator
        )
    holder.append(coordinator)
    # The dashboard and the metrics belong to the managers, which a member holding no group
    # has not (yet): each member's show the groups it holds.
    root.putChild(b"dashboard", ServedByManagers(coordinator, lambda m: m.dashboard.resource))
    root.putChild(b"metrics", ServedByManagers(coordinator, lambda m: m.dashboard.metrics_resource))
    if managers is not None:
        coordinator.serve(managers)
    if config.min_workers > 0 and config.worker_command:
        WorkerStarter(
            reactor,
            lambda: live_workers(coordinator.managers),
            launcher(cast(IReactorProcess, reactor)),
            config.min_workers,
            config.worker_command,
            config.worker_log or Path("worker-command.log"),
            coordinator.url,
            config.worker_start_interval,
        ).setServiceParent(coordinator)
    return coordinator
