"""The ``twisted.web`` resources: the dashboard under ``/dashboard`` and ``/metrics``.

The dashboard answers GET only (it has nothing to change, so nothing a forged cross-site
request could do), to a browser holding a session cookie; its one door is the login link.
Every answer forbids framing and caching, and its Content-Security-Policy lets the page run
only the coordinator's own script: even a value that slipped past escaping would not run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.coordinator.web import Authenticator, HttpError
from xwch.dashboard import pages
from xwch.dashboard.live import LiveUpdates
from xwch.dashboard.logins import LoginDesk
from xwch.dashboard.views import DashboardViews
from xwch.protocol.wire import ROLE_CLIENT, ROLE_METRICS

SESSION_COOKIE = b"xwch_session"
STATIC = {
    "dashboard.css": b"text/css; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    b"frame-ancestors 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}
METRICS_ROLES = (ROLE_CLIENT, ROLE_METRICS)
LOG_IN_AGAIN = "Open a fresh link: run `xwch-client dashboard` and follow the URL it prints."


def _static(name: str) -> bytes:
    return files("xwch.dashboard").joinpath("static", name).read_bytes()


class DashboardResource(Resource):
    """Every page of the dashboard; ``?fragment=1`` answers a page's content alone."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        logins: LoginDesk,
        token_in_force: Callable[[int], Awaitable[bool]],
        views: DashboardViews,
        live: LiveUpdates,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._logins = logins
        self._token_in_force = token_in_force
        self._views = views
        self._live = live

    def render(self, request: Request) -> bytes | int:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return self._html(
                request, 405, "Read only", "The dashboard only shows; it changes nothing."
            )
        parts = [unquote(p) for p in (request.path or b"").decode("ascii", "replace").split("/")]
        # parts: "", "dashboard", ...
        where = [p for p in parts[2:]]
        if where and where[-1] == "":
            where.pop()
        if where[:1] == ["login"]:
            return self._login(request)
        if len(where) == 2 and where[0] == "static" and where[1] in STATIC:
            request.setHeader(b"content-type", STATIC[where[1]])
            request.setHeader(b"cache-control", b"max-age=300")
            return _static(where[1])
        cookie = request.getCookie(SESSION_COOKIE)
        session = self._logins.session(cookie.decode("ascii", "replace") if cookie else None)
        if session is None:
            return self._html(request, 401, "Not logged in", LOG_IN_AGAIN)
        d = ensureDeferred(self._serve(request, where, session.token_id))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _serve(self, request: Request, where: list[str], token_id: int) -> None:
        if not await self._token_in_force(token_id):
            body = self._html(
                request,
                401,
                "Signed out",
                "The token this session was opened with has been revoked. " + LOG_IN_AGAIN,
            )
            _write(request, 401, body, b"text/html; charset=utf-8")
            return
        if where == ["events"]:
            self._live.open(request)
            return
        await self._page(request, where)

    def _login(self, request: Request) -> bytes:
        code = (request.args or {}).get(b"code", [b""])[-1].decode("ascii", "replace")
        session = self._logins.open_session(code)
        if session is None:
            return self._html(
                request,
                403,
                "Link used or expired",
                "A login link works once, within five minutes. "
                "Run `xwch-client dashboard` for a new one.",
            )
        request.addCookie(
            SESSION_COOKIE,
            session.encode("ascii"),
            path=b"/dashboard",
            httpOnly=True,
            sameSite="strict",
            secure=request.isSecure(),
        )
        # Away from the URL with the code, so a reload does not spend a spent code again.
        request.setResponseCode(303)
        request.setHeader(b"location", b"/dashboard/")
        return b""

    async def _page(self, request: Request, where: list[str]) -> None:
        now = self._clock.seconds()
        try:
            await self._render_page(request, where, now)
        finally:
            self._live.spent(self._clock.seconds() - now)

    async def _render_page(self, request: Request, where: list[str], now: float) -> None:
        views = self._views
        title, current, main = "Not found", "", pages.message_page("Not found", "No such page.")
        status = 200
        try:
            if where == []:
                title, current = "Jobs", "jobs"
                main = pages.jobs_page(await views.jobs(), now)
            elif len(where) == 2 and where[0] == "jobs":
                view = await views.job(where[1])
                title, current, main = view.job.name, "jobs", pages.job_page(view)
            elif len(where) == 5 and where[0] == "jobs" and where[2:5:2] == ["tasks", "logs"]:
                log = await views.logs(where[1], where[3])
                title, current = f"{where[3]}: logs", "jobs"
                main = pages.logs_page(where[1], log)
            elif where == ["workers"]:
                title, current = "Workers", "workers"
                main = pages.workers_page(await views.workers(), now)
            elif where == ["platform"]:
                title, current = "Warehouses & coordinators", "platform"
                main = pages.platform_page(
                    await views.warehouses(), await views.coordinators(), now
                )
            elif where == ["network"]:
                title, current = "Network", "network"
                main = pages.network_page(await views.network())
            else:
                status = 404
        except HttpError as e:
            status, main = e.status, pages.message_page("Not found", e.message)
        except Exception as e:
            mapped = _not_found(e)
            if mapped is None:
                raise
            status, main = 404, pages.message_page("Not found", mapped)
        fragment = (request.args or {}).get(b"fragment") == [b"1"]
        body = main if fragment else pages.frame(title, current, main)
        _write(request, status, body.encode("utf-8"), b"text/html; charset=utf-8")

    def _html(self, request: Request, status: int, title: str, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return pages.frame(title, "", pages.message_page(title, message)).encode("utf-8")

    def _failed(self, failure: Failure, request: Request) -> None:
        self.log.failure("dashboard page {path} failed", failure, path=request.path)
        if not request.finished and request.channel is not None and not request.startedWriting:
            body = pages.frame("Error", "", pages.message_page("Error", "internal error"))
            _write(request, 500, body.encode("utf-8"), b"text/html; charset=utf-8")


def _not_found(e: Exception) -> str | None:
    from xwch.coordinator.api import map_error

    mapped = map_error(e)
    return None if mapped is None or mapped.status != 404 else mapped.message


class MetricsResource(Resource):
    """``GET /metrics``: the Prometheus text format, for a token of role client or metrics."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        authenticate: Authenticator,
        refresh: Callable[[], Awaitable[None]],
        exposition: Callable[[], bytes],
    ) -> None:
        super().__init__()
        self._authenticate = authenticate
        self._refresh = refresh
        self._exposition = exposition

    def render_GET(self, request: Request) -> int:
        d = ensureDeferred(self._serve(request))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    async def _serve(self, request: Request) -> None:
        denied = await check_bearer(request, self._authenticate, METRICS_ROLES)
        if denied is not None:
            status, message = denied
            _write(request, status, message.encode() + b"\n", b"text/plain; charset=utf-8")
            return
        await self._refresh()
        _write(request, 200, self._exposition(), CONTENT_TYPE_LATEST.encode("ascii"))

    def _failed(self, failure: Failure, request: Request) -> None:
        self.log.failure("serving /metrics failed", failure)
        if not request.finished and request.channel is not None and not request.startedWriting:
            _write(request, 500, b"internal error\n", b"text/plain; charset=utf-8")


async def check_bearer(
    request: Request, authenticate: Callable[[str], Awaitable[Any]], roles: tuple[str, ...]
) -> tuple[int, str] | None:
    """None when the request carries a token of one of ``roles``; else the status and why."""
    raw = request.getHeader(b"authorization") or b""
    header = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        request.setHeader(b"www-authenticate", b"Bearer")
        return 401, "a token is needed: Authorization: Bearer <token>"
    record = await authenticate(token.strip())
    if record is None:
        return 401, "unknown token"
    if record.role not in roles:
        return 403, f"a {record.role} token cannot read metrics; it needs a client or metrics token"
    return None


def _write(request: Request, status: int, body: bytes, content_type: bytes) -> None:
    if request.finished or request.channel is None:
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", str(len(body)).encode("ascii"))
    request.write(body)
    request.finish()
