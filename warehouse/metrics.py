"""``GET /metrics`` of a warehouse: its objects, room, traffic, sessions and policy.

A warehouse holds no tokens (it checks capabilities signed by the coordinator), so it asks the
coordinator whether a scraper's token may read metrics (``GET /api/v1/metrics/access`` with
that token), and remembers a yes for :attr:`MetricsAccess.REMEMBER` seconds: Prometheus scrapes
every few seconds, the coordinator need not be asked each time, and a revoked token is refused
once that has passed. A no is never remembered, so a token created a moment ago works at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.errors import ApiError, Unreachable

if TYPE_CHECKING:
    from .routes import WarehouseResource

log = Logger()

ACCESS_PATH = "/api/v1/metrics/access"

# Asks the coordinator about one token: True (may read), False (refused); raises when the
# coordinator cannot say.
TokenCheck = Callable[[str], Awaitable[bool]]


class MetricsAccess:
    """Whether a bearer token may read this warehouse's metrics, as its coordinator says."""

    # Short, so that a revoked token stops reading metrics within seconds.
    REMEMBER = 5.0

    def __init__(self, clock: IReactorTime, ask: TokenCheck) -> None:
        self._clock = clock
        self._ask = ask
        self._allowed: dict[str, float] = {}  # SHA-256 of the token -> until when

    async def allows(self, token: str) -> bool:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self._clock.seconds()
        if self._allowed.get(key, 0.0) > now:
            return True
        if not await self._ask(token):
            return False
        self._allowed = {k: t for k, t in self._allowed.items() if t > now}
        self._allowed[key] = now + self.REMEMBER
        return True


def coordinator_check(ask_with: Callable[[str], Awaitable[object]]) -> TokenCheck:
    """A :data:`TokenCheck` from a call of the access route made with the given token."""

    async def check(token: str) -> bool:
        try:
            await ask_with(token)
        except ApiError as e:
            if e.status in (401, 403):
                return False
            raise
        return True

    return check


class _WarehouseCollector(Collector):
    def __init__(self, root: WarehouseResource) -> None:
        self._root = root

    def collect(self) -> Iterator[Metric]:
        root = self._root
        store, network = root.store, root.network
        yield GaugeMetricFamily(
            "xwch_warehouse_registered",
            "1 once the coordinator has accepted this warehouse",
            value=0 if root.registration is None else 1,
        )
        yield GaugeMetricFamily("xwch_warehouse_objects", "Objects stored", value=store.count())
        yield GaugeMetricFamily(
            "xwch_warehouse_free_bytes", "Room left on the disk", value=store.free_bytes()
        )
        yield GaugeMetricFamily(
            "xwch_warehouse_capacity_bytes", "Size of the disk", value=store.capacity_bytes()
        )
        moved = CounterMetricFamily(
            "xwch_warehouse_transfer_bytes", "Bytes served and received", labels=["direction"]
        )
        moved.add_metric(["sent"], network.meter.total_sent)
        moved.add_metric(["received"], network.meter.total_received)
        yield moved
        sessions = GaugeMetricFamily(
            "xwch_warehouse_sessions", "Transfer sessions: active and the limit", labels=["state"]
        )
        status = network.sessions.status()
        sessions.add_metric(["active"], status.get("active", 0))
        sessions.add_metric(["limit"], status.get("limit", 0))
        yield sessions
        yield GaugeMetricFamily(
            "xwch_policy_packet_size_bytes",
            "Packet size in force",
            value=network.policy.packet_size,
        )
        yield GaugeMetricFamily(
            "xwch_policy_packet_sleep_seconds",
            "Pause between packets",
            value=network.policy.packet_sleep,
        )


class MetricsResource(Resource):
    """``GET /metrics`` for a token the coordinator says may read metrics."""

    isLeaf = True

    def __init__(self, root: WarehouseResource, access: MetricsAccess | None) -> None:
        super().__init__()
        self._access = access
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_WarehouseCollector(root))

    def render_GET(self, request: Request) -> int:
        d = Deferred.fromCoroutine(self._serve(request))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _serve(self, request: Request) -> None:
        raw = request.getHeader(b"authorization") or b""
        header = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _write(request, 401, b"a token is needed: Authorization: Bearer <token>\n")
            return
        if self._access is None:
            _write(request, 503, b"this warehouse cannot check tokens\n")
            return
        try:
            allowed = await self._access.allows(token.strip())
        except (ApiError, Unreachable) as e:
            _write(request, 503, f"cannot ask the coordinator about the token: {e}\n".encode())
            return
        if not allowed:
            _write(request, 403, b"this token may not read metrics (role client or metrics)\n")
            return
        _write(request, 200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    def _failed(self, failure: Failure, request: Request) -> None:
        log.failure("serving /metrics failed", failure)
        if not request.finished and request.channel is not None and not request.startedWriting:
            _write(request, 500, b"internal error\n")


def _write(
    request: Request, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> None:
    if request.finished or request.channel is None:
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type.encode("ascii"))
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()
