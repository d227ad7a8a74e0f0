"""Joins the dashboard and the metrics to a coordinator's parts.

Everything here reads; nothing changes a job, a worker or the store. The managers are read
through the API's handlers (``views``), the workers' signals as they pass the API
(``observer``), and a few read-only accessors for what the API does not carry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from xwch.coordinator.api import CLIENT, CoordinatorApi
from xwch.coordinator.catalog import Catalog
from xwch.coordinator.communication import CommunicationManager
from xwch.coordinator.tasks import TasksManager
from xwch.coordinator.web import ApiRequest, Authenticator, Route
from xwch.coordinator.workers import WorkersManager
from xwch.dashboard import pages
from xwch.dashboard.live import LiveUpdates
from xwch.dashboard.logins import LoginDesk, session_key
from xwch.dashboard.metrics import CoordinatorMetrics
from xwch.dashboard.observer import SignalObserver
from xwch.dashboard.resources import METRICS_ROLES, DashboardResource, MetricsResource
from xwch.dashboard.traffic import TrafficHistory, peer_sites
from xwch.dashboard.views import DashboardViews
from xwch.protocol.client import DashboardLogin
from xwch.store import overview
from xwch.store.database import Database


@dataclass
class Dashboard:
    logins: LoginDesk
    observer: SignalObserver
    metrics: CoordinatorMetrics
    views: DashboardViews
    live: LiveUpdates
    resource: DashboardResource
    metrics_resource: MetricsResource
    routes: list[Route]  # the API's routes for login codes and metrics access
    # Takes the dashboard's listener off the store, which outlives it: a member builds new
    # managers, and a new dashboard, each time the groups it holds change.
    unhook: Callable[[], None]


def make_dashboard(
    clock: IReactorTime,
    api: CoordinatorApi,
    db: Database,
    tasks: TasksManager,
    workers: WorkersManager,
    catalog: Catalog,
    communication: CommunicationManager,
    authenticate: Authenticator,
    token_in_force: Callable[[int], Awaitable[bool]],
    store_secret: bytes,
) -> Dashboard:
    """``store_secret``: the store's own secret, from which every member derives the key of the
    dashboard's sessions (logins.py); ``token_in_force``: whether a client token (by id) is not
    revoked, asked for the session of every page."""
    metrics = CoordinatorMetrics()
    communication.on_work_request_served.append(metrics.work_request_seconds.observe)
    db.on_commit.append(metrics.commit_seconds.observe)

    def unhook() -> None:
        if metrics.commit_seconds.observe in db.on_commit:
            db.on_commit.remove(metrics.commit_seconds.observe)

    traffic = TrafficHistory(
        clock, peer_sites(lambda: {w.url: w.site for w in catalog.warehouses.values()})
    )

    def site_of_worker(worker_id: str) -> str | None:
        record = workers.workers.get(worker_id)
        return None if record is None else record.site

    observer = SignalObserver(metrics, traffic, site_of_worker)
    views = DashboardViews(
        api, db, observer, traffic, lambda worker_id: len(tasks.running_on(worker_id))
    )

    def fingerprint() -> Hashable:
        # Costs nothing, and changes whenever a page would: the workers' signals and the jobs'
        # requests (counted by the observer), workers or warehouses coming or going, a new
        # traffic bucket; and every ten seconds at least, for what changes without a signal
        # (a worker lost, a task relaunched) and so that "last heard" stays true.
        return (
            observer.changes,
            observer.suspended_workers,
            len(workers.workers),
            catalog.alive_count(),
            traffic.version(),
            int(clock.seconds() // LiveUpdates.SLOWEST_CHANGE),
        )

    live = LiveUpdates(clock, fingerprint)
    logins = LoginDesk(clock, session_key(store_secret))

    async def issue_login(req: ApiRequest) -> tuple[int, Any]:
        assert req.token is not None
        code = logins.issue_code(req.token.name, req.token.id)
        return 201, DashboardLogin(
            path=f"{pages.BASE}/login?code={code}", expires_in=LoginDesk.CODE_LIFETIME
        )

    async def metrics_access(req: ApiRequest) -> tuple[int, Any]:
        # Answered only past the router's check of the token's role: that check is the answer.
        assert req.token is not None
        return 200, {"role": req.token.role}

    async def refresh() -> None:
        """The state metrics read, taken just before a scrape."""
        state = metrics.state
        state.jobs = await db.read(overview.job_counts_thd)
        state.tasks = dict(tasks.counts())
        rows = await views.workers()
        state.workers = dict(Counter(pages.worker_state(r)[0] for r in rows))
        live_rows = [r for r in rows if r.info.state != "lost"]
        state.slots_total = sum(r.info.slots for r in live_rows)
        state.slots_busy = sum(min(r.busy, r.info.slots) for r in live_rows)
        warehouses = await views.warehouses()
        state.warehouses = dict(Counter("alive" if w.alive else "silent" for w in warehouses))
        status = communication.status()
        policy: dict[str, Any] = status["policy"]  # type: ignore[assignment]
        state.network_load = float(status["network_load"])  # type: ignore[arg-type]
        state.packet_size = int(policy["packet_size"])
        state.packet_sleep = float(policy["packet_sleep"])
        state.max_transfers = int(policy["max_transfers"])
        scanner = api.scanner.status() if api.scanner is not None else {}
        state.repairs = dict(scanner.get("repairs", {}))  # type: ignore[call-overload]
        state.coordinators = {c.id: (c.state, len(c.groups)) for c in await views.coordinators()}

    return Dashboard(
        logins=logins,
        observer=observer,
        metrics=metrics,
        views=views,
        live=live,
        resource=DashboardResource(clock, logins, token_in_force, views, live),
        metrics_resource=MetricsResource(authenticate, refresh, metrics.exposition),
        routes=[
            Route(
                "POST",
                "/dashboard/logins",
                CLIENT,
                issue_login,
                "A one-time login link of the dashboard (works once, within five minutes)",
            ),
            Route(
                "GET",
                "/metrics/access",
                METRICS_ROLES,
                metrics_access,
                "Whether a token may read metrics (warehouses ask it of their scrapers' tokens)",
            ),
        ],
        unhook=unhook,
    )
