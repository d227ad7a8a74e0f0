"""The part of a coordinator that serves the platform: the four managers, the catalog, the
scanner and the API in front of them, built from the store and started as one service.

A lone coordinator builds it once at start. With several coordinators on one PostgreSQL store,
each member builds one for the groups it holds, from the store (``serving.py``): exactly as a
restarted coordinator recovers, limited to those groups' jobs and workers; it is dropped and
built again whenever that set changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from xwch.coordinator.api import CoordinatorApi, map_error
from xwch.coordinator.auth import Authenticator
from xwch.coordinator.catalog import Catalog, WarehouseRefresh
from xwch.coordinator.checkpoints import CheckpointBook, DropRequest
from xwch.coordinator.communication import CommunicationManager
from xwch.coordinator.copies import CopyRequest
from xwch.coordinator.endings import JobEndings
from xwch.coordinator.estimates import TransferEstimates
from xwch.coordinator.locality import LocalityScheduler
from xwch.coordinator.prefetch import Prefetcher
from xwch.coordinator.scanner import Scanner
from xwch.coordinator.scheduler import POLICY_FIFO, POLICY_LOCALITY, FifoScheduler, Scheduler
from xwch.coordinator.tasks import TasksManager
from xwch.coordinator.waiting import WorkWaitingRoom
from xwch.coordinator.web import JsonRouter
from xwch.coordinator.workers import WorkersManager
from xwch.dashboard.assembly import Dashboard, make_dashboard
from xwch.protocol.wire import API_PREFIX
from xwch.store.database import Database
from xwch.store.group_locks import Fencing


@dataclass(frozen=True, kw_only=True)
class ManagersConfig:
    """What the managers are tuned by; ``CoordinatorConfig`` adds the rest of a coordinator's
    settings."""

    # Seconds between a worker's Work Alive signals, and the silence after which it is lost.
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


class HeldRequests(Service):
    """Answers, when the managers stop, the requests held open until something happens:
    Work Requests waiting for work, polls waiting for a job's end."""

    def __init__(self, waiting: WorkWaitingRoom, endings: JobEndings) -> None:
        self._waiting = waiting
        self._endings = endings

    def stopService(self) -> None:
        super().stopService()
        self._waiting.close()
        self._endings.close()


class Managers(MultiService):
    """The serving part of a coordinator, with handles on each piece."""

    def __init__(
        self,
        catalog: Catalog,
        communication: CommunicationManager,
        scheduler: Scheduler,
        tasks: TasksManager,
        workers: WorkersManager,
        scanner: Scanner,
        api: CoordinatorApi,
        router: JsonRouter,
        dashboard: Dashboard,
        refresh: WarehouseRefresh | None = None,
    ) -> None:
        super().__init__()
        self.catalog = catalog
        self.communication = communication
        self.scheduler = scheduler
        self.tasks = tasks
        self.workers = workers
        self.scanner = scanner
        self.api = api
        self.router = router
        self.dashboard = dashboard
        self.waiting = api.waiting
        workers.setServiceParent(self)
        scanner.setServiceParent(self)
        # Warehouses heard by other members sharing the store (see catalog.py).
        self.refresh = refresh
        if refresh is not None:
            refresh.setServiceParent(self)
        # Stopped first: requests held open are answered before the rest stops.
        HeldRequests(api.waiting, tasks.endings).setServiceParent(self)
        # Its event streams are held requests too: ended as the managers stop.
        dashboard.live.setServiceParent(self)

    def stopService(self) -> Deferred[None]:
        self.dashboard.unhook()
        return cast("Deferred[None]", super().stopService())


def make_scheduler(
    config: ManagersConfig, catalog: Catalog, communication: CommunicationManager
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


async def make_managers(
    config: ManagersConfig,
    reactor: IReactorTime,
    db: Database,
    capability_key: bytes,
    request_copy: CopyRequest,
    fence: Fencing | None = None,
    request_drop: DropRequest | None = None,
) -> Managers:
    """Managers rebuilt from what the store holds (catalog, running jobs, workers), not yet
    started; every change of tasks they make is conditioned on ``fence`` (on a shared store,
    the fences of every group held: only those groups' jobs and workers are loaded)."""
    catalog = Catalog(
        reactor, db, capability_key, config.heartbeat_interval, config.warehouse_timeout
    )
    await catalog.load()
    communication = CommunicationManager(reactor=reactor)
    scheduler = make_scheduler(config, catalog, communication)
    tasks = TasksManager(reactor, db, catalog, scheduler)
    tasks.fence = fence
    await tasks.recover()
    await CheckpointBook(reactor, db, tasks, catalog, request_drop).recover()
    workers = WorkersManager(
        reactor, db, tasks, communication, config.alive_interval, config.alive_timeout
    )
    await workers.load()
    if isinstance(scheduler, LocalityScheduler):
        tasks.prefetcher = Prefetcher(reactor, catalog, request_copy, scheduler.site_slots)
    scanner = Scanner(
        reactor, tasks, workers, catalog, request_copy, config.replicas, config.scan_interval
    )
    waiting = WorkWaitingRoom(reactor, lambda: len(scheduler))
    tasks.on_ready.append(waiting.work_appeared)
    api = CoordinatorApi(db, tasks, workers, catalog, communication, waiting)
    api.scanner = scanner
    authenticator = Authenticator(db, reactor)
    dashboard = make_dashboard(
        reactor,
        api,
        db,
        tasks,
        workers,
        catalog,
        communication,
        authenticator,
        authenticator.in_force,
        capability_key,
    )
    routes = dashboard.observer.wrap([*api.routes(), *dashboard.routes])
    router = JsonRouter(API_PREFIX, routes, authenticator, map_error)
    return Managers(
        catalog,
        communication,
        scheduler,
        tasks,
        workers,
        scanner,
        api,
        cast(Any, router),
        dashboard,
        WarehouseRefresh(catalog, reactor),
    )
