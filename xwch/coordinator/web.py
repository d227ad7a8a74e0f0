"""JSON routing for ``twisted.web``: authentication, body decoding, errors as JSON.

A :class:`Route` names a method, a path pattern, the roles allowed, and an async handler. The
:class:`JsonRouter` resource matches requests, checks the bearer token, decodes the JSON body,
runs the handler and writes its answer; every expected error becomes ``{"error", "message"}``
with its status, and an unexpected one is logged and answered 500 without a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xwch.protocol.codec import Message, decode_body, encode
from xwch.store.records import TokenRecord

_any_json = msgspec.json.Decoder()

# Bodies larger than this are refused before decoding (a 100,000-task job is a few MB).
MAX_BODY = 256 * 1024 * 1024


class HttpError(Exception):
    """An answer other than success: status, machine-readable code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        extra: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})
        self.retry_after = retry_after
        super().__init__(message)


class Caller:
    """Whoever sent a request, as far as a handler that keeps it waiting needs to know: a
    request held open until something happens (a Work Request until there is work) must let go
    when its caller hangs up, and work handed to a caller already gone must be taken back."""

    def gone(self) -> bool:
        """Whether the caller hung up before being answered."""
        return False

    def when_gone(self) -> Deferred[None]:
        """Fires if the caller hangs up before being answered (never, for this one)."""
        return Deferred()


# A caller that never hangs up: requests made in-process, by tests and tools.
STAYING = Caller()


class _HttpCaller(Caller):
    def __init__(self, request: Request) -> None:
        self._request = request

    def gone(self) -> bool:
        return self._request.channel is None

    def when_gone(self) -> Deferred[None]:
        hung_up: Deferred[None] = Deferred()
        if self.gone():
            hung_up.callback(None)
            return hung_up
        # Fires when the answer is written, or fails when the connection is lost first.
        self._request.notifyFinish().addErrback(lambda _: hung_up.callback(None))
        return hung_up


@dataclass(frozen=True)
class ApiRequest:
    token: TokenRecord | None
    params: Mapping[str, str]
    query: Mapping[str, str]
    body: Any
    caller: Caller = STAYING


Handler = Callable[[ApiRequest], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # e.g. "/jobs/{job}/tasks"
    roles: tuple[str, ...]
    handler: Handler
    summary: str
    # The message the body carries, decoded and checked before the handler runs; a name only
    # (for the OpenAPI document): any JSON, which the handler checks.
    body: type[Message] | str | None = None
    regex: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.pattern))
        object.__setattr__(self, "regex", re.compile(f"^{regex}$"))


class JsonRequest(server.Request):
    """A request whose POST body is never parsed as a form: our bodies are JSON, and the form
    check parses every POST's Content-Type with the ``email`` package, a tenth of a millisecond
    or more per request on the coordinator's busiest routes. ``request.args`` still holds the
    query string."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)


Authenticator = Callable[[str], Awaitable[TokenRecord | None]]
ErrorMapper = Callable[[Exception], HttpError | None]


class JsonRouter(Resource):
    """One resource serving every route under a prefix."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        prefix: str,
        routes: Sequence[Route],
        authenticate: Authenticator,
        map_error: ErrorMapper,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.routes = list(routes)
        self._authenticate = authenticate
        self._map_error = map_error

    def render(self, request: Request) -> int:
        d = ensureDeferred(self._serve(request))
        d.addErrback(self._last_resort, request)
        return NOT_DONE_YET

    def _last_resort(self, failure: Failure, request: Request) -> None:
        self.log.failure("unexpected error serving {path}", failure, path=request.path)
        if not request.finished and not request.startedWriting:
            write_json(request, 500, {"error": "internal", "message": "internal error"})

    async def _serve(self, request: Request) -> None:
        try:
            status, answer = await self._dispatch(request)
        except HttpError as e:
            body = {"error": e.code, "message": e.message, **e.extra}
            if e.retry_after is not None:
                body["retry_after"] = e.retry_after
                request.setHeader(b"retry-after", f"{max(1, round(e.retry_after))}".encode())
            status, answer = e.status, body
        except Exception as e:
            mapped = self._map_error(e)
            if mapped is None:
                raise
            body = {"error": mapped.code, "message": mapped.message, **mapped.extra}
            if mapped.retry_after is not None:
                body["retry_after"] = mapped.retry_after
                request.setHeader(b"retry-after", f"{max(1, round(mapped.retry_after))}".encode())
            status, answer = mapped.status, body
        if request.channel is None or request.finished:
            return  # the caller went away
        write_json(request, status, answer)

    async def _dispatch(self, request: Request) -> tuple[int, Any]:
        path = (request.path or b"").decode("utf-8", "replace")
        if not path.startswith(self.prefix):
            raise HttpError(404, "not_found", f"no such route: {path}")
        local = path[len(self.prefix) :] or "/"
        method = (request.method or b"GET").decode("ascii")
        allowed = []
        for route in self.routes:
            match = route.regex.match(local)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            token = await self._check_token(request, route)
            return await route.handler(
                ApiRequest(
                    token=token,
                    params=match.groupdict(),
                    query=_query(request),
                    body=_body(request, route.body) if method in ("POST", "PUT") else None,
                    caller=_HttpCaller(request),
                )
            )
        if allowed:
            raise HttpError(
                405,
                "method_not_allowed",
                f"{method} not allowed on {path}; use {', '.join(sorted(set(allowed)))}",
            )
        raise HttpError(404, "not_found", f"no such route: {path}")

    async def _check_token(self, request: Request, route: Route) -> TokenRecord | None:
        if not route.roles:
            return None
        raw = request.getHeader(b"authorization") or b""
        header = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "unauthorized", "a token is needed: Authorization: Bearer <token>")
        record = await self._authenticate(token.strip())
        if record is None:
            raise HttpError(401, "unauthorized", "unknown token")
        if record.role not in route.roles:
            raise HttpError(
                403,
                "forbidden",
                f"a {record.role} token cannot do this; it needs a {' or '.join(route.roles)} token",
            )
        return record


def _query(request: Request) -> dict[str, str]:
    args = request.args or {}
    return {
        k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in args.items() if v
    }


def _body(request: Request, kind: type[Message] | str | None) -> Any:
    """The request's body: the route's message, or any JSON (None when there is none)."""
    content = request.content
    raw = b""
    if content is not None:
        content.seek(0, 2)
        size = content.tell()
        if size > MAX_BODY:
            raise HttpError(413, "too_large", f"request body over {MAX_BODY} bytes")
        content.seek(0)
        raw = content.read()
    if isinstance(kind, type):
        return decode_body(raw, kind)
    if not raw:
        return None
    try:
        return _any_json.decode(raw)
    except msgspec.DecodeError as e:
        raise HttpError(400, "bad_request", f"the body is not valid JSON: {e}") from None


def write_json(request: Request, status: int, answer: Any) -> None:
    data = encode(answer)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", str(len(data)).encode("ascii"))
    request.write(data)
    request.finish()
