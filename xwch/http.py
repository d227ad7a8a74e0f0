"""A small JSON-over-HTTP client, shared by the worker, the warehouse and the client.

Every request carries the bearer token; every error answer becomes an :class:`ApiError` (with the
server's ``retry_after`` when it is busy) and every failure to connect an :class:`Unreachable`,
so callers handle two domain errors and never a raw HTTP status or a Twisted connection error.
"""

from __future__ import annotations

import json
from typing import Any, cast

import treq
from treq.client import HTTPClient
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, _HTTP11ClientFactory
from twisted.web.iweb import IAgent

from xwch.errors import ApiError, Unreachable

# Errors that mean "nobody answered", as opposed to an answer we did not like.
_UNREACHABLE = (ConnectError, ConnectionLost, DNSLookupError, TimeoutError, ResponseFailed)

REQUEST_TIMEOUT = 60.0


class _QuietClientFactory(_HTTP11ClientFactory):
    # Otherwise every new connection logs "Starting factory" and "Stopping factory".
    noisy = False


def make_http_client(reactor: IReactorTCP, persistent: bool = True) -> HTTPClient:
    """A treq client with a connection pool, so packets reuse one connection."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietClientFactory
    pool.maxPersistentPerHost = 8
    # Idle connections are dropped before a server would drop them under us.
    pool.cachedConnectionTimeout = 30
    agent = cast(IAgent, Agent(reactor, pool=pool))
    return HTTPClient(agent)


async def decode_error(response: Any) -> ApiError:
    """An :class:`ApiError` from an error response of any of our services."""
    raw = await response.content()
    code, message, details = "http_error", raw.decode("utf-8", "replace").strip(), {}
    try:
        body = json.loads(raw)
        if isinstance(body, dict):
            code = str(body.get("error", code))
            message = str(body.get("message", message))
            details = body
    except ValueError:
        pass
    retry_after: float | None = None
    header = response.headers.getRawHeaders(b"retry-after")
    if header:
        try:
            retry_after = float(header[0])
        except ValueError:
            retry_after = None
    return ApiError(
        response.code,
        code,
        message or f"HTTP {response.code}",
        retry_after=retry_after,
        details=details,
    )


class JsonApi:
    """Calls one service's JSON API with one token."""

    def __init__(
        self,
        http: HTTPClient,
        base_url: str,
        token: str | None,
        reactor: IReactorTime | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._reactor = reactor
        self._timeout = timeout

    def headers(self) -> dict[bytes | str, list[bytes | str]]:
        headers: dict[bytes | str, list[bytes | str]] = {b"accept": [b"application/json"]}
        if self.token:
            headers[b"authorization"] = [b"Bearer " + self.token.encode("ascii")]
        return headers

    async def call(self, method: str, path: str, body: object | None = None) -> Any:
        """The decoded JSON answer of ``method path``; raises ApiError or Unreachable."""
        url = self.base_url + path
        headers = self.headers()
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers[b"content-type"] = [b"application/json"]
        try:
            response = await self.http.request(
                method, url, headers=headers, data=data, timeout=self._timeout
            )
            if response.code >= 400:
                raise await decode_error(response)
            raw = await response.content()
        except _UNREACHABLE as e:
            raise Unreachable(f"cannot reach {self.base_url}: {e}") from None
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(response.code, "bad_response", f"{url} did not answer JSON") from None

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def post(self, path: str, body: object | None = None) -> Any:
        return await self.call("POST", path, {} if body is None else body)


__all__ = ["JsonApi", "decode_error", "make_http_client", "treq"]
