"""A small JSON-over-HTTP client, shared by the worker, the warehouse and the client.

Every request carries the bearer token; every error answer becomes an :class:`ApiError` (with the
server's ``retry_after`` when it is busy) and every failure to connect an :class:`Unreachable`,
so callers handle two domain errors and never a raw HTTP status or a Twisted connection error.

Calls through a client of :func:`make_http_client` go straight to its pooled ``Agent``: treq's
URL handling (IDNA on every request, even for ``127.0.0.1``), cookie, redirect and decoding
agents cost the worker about as much CPU as the rest of a call, for nothing a JSON API needs.
Any other treq-like client (``StubTreq`` in tests) is called through ``request``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
import treq
from treq.client import HTTPClient
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from xwch.errors import ApiError, Unreachable
from xwch.protocol.codec import decode, encode

M = TypeVar("M")

# Errors that mean "nobody answered", as opposed to an answer we did not like.
_UNREACHABLE = (ConnectError, ConnectionLost, DNSLookupError, TimeoutError, ResponseFailed)

REQUEST_TIMEOUT = 60.0
# Redirects followed in one call (a coordinator sends a call about another's group there).
MAX_REDIRECTS = 3
# Tells a coordinator which of its fellow members this call found not answering, so that it
# does not send the call there again.
UNREACHABLE_HEADER = b"x-xwch-unreachable"


def _unreachable_value(unreachable: Collection[str]) -> bytes:
    """The header's value: the silent members' URLs, comma-separated, in a stable order."""
    return ",".join(sorted(unreachable)).encode()


# How much one read off a connection takes at most. Twisted's 64 KiB makes an 8 MiB packet 128
# reads, each a trip through the reactor and five layers of HTTP parsing: on a fast link that was
# a good part of a download's CPU. A read takes what the socket holds, so a bigger limit changes
# nothing on a slow link, where little is there at a time.
RECEIVE_SIZE = 1024 * 1024


class _BigReadsProtocol(HTTP11ClientProtocol):
    def connectionMade(self) -> None:
        super().connectionMade()
        if isinstance(self.transport, tcp.Connection):
            self.transport.bufferSize = RECEIVE_SIZE


class _QuietClientFactory(_HTTP11ClientFactory):
    # Otherwise every new connection logs "Starting factory" and "Stopping factory".
    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> HTTP11ClientProtocol:
        return _BigReadsProtocol(self._quiescentCallback)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """TCP for http, TLS over TCP for https (as ``Agent``'s own), each made once per server:
    making one runs IDNA on the host name, a good part of a small request's cost."""

    # A client talks to a coordinator and a few warehouses; past this, start afresh.
    MAX = 256

    def __init__(self, reactor: IReactorTCP, tls: IPolicyForHTTPS | None = None) -> None:
        self._reactor = reactor
        # How https:// servers are checked: the public CAs, or a pinned certificate (xwch.tls).
        self._tls = tls if tls is not None else BrowserLikePolicyForHTTPS()
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def use_policy(self, tls: IPolicyForHTTPS) -> None:
        self._tls = tls
        self._made.clear()

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
            if uri.scheme == b"https":
                host = uri.host.decode("ascii")
                endpoint = wrapClientTLS(self._tls.creatorForNetloc(host, uri.port), endpoint)
            elif uri.scheme != b"http":
                raise ValueError(f"unsupported scheme {uri.scheme!r}")
            if len(self._made) >= self.MAX:
                self._made.clear()
            self._made[key] = endpoint
        return endpoint


class PooledHttpClient(HTTPClient):
    """treq's client (transfers use it as such), keeping its bare pooled ``Agent`` for
    :class:`JsonApi`'s calls."""

    def __init__(
        self,
        agent: IAgent,
        reactor: IReactorTime,
        pool: HTTPConnectionPool | None = None,
        endpoints: _Endpoints | None = None,
    ) -> None:
        super().__init__(agent)
        self.agent = agent
        self.reactor = reactor
        self.pool = pool
        self._endpoints = endpoints

    def use_https_policy(self, tls: IPolicyForHTTPS) -> None:
        """Check https:// servers by ``tls`` from now on (a pin learnt from the token)."""
        if self._endpoints is not None:
            self._endpoints.use_policy(tls)


def make_http_client(
    reactor: IReactorTCP, persistent: bool = True, tls: IPolicyForHTTPS | None = None
) -> PooledHttpClient:
    """A treq client with a connection pool, so packets reuse one connection; ``tls`` checks
    https:// servers (default: against the public CAs)."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietClientFactory
    pool.maxPersistentPerHost = 8
    # Idle connections are dropped before a server would drop them under us.
    pool.cachedConnectionTimeout = 30
    endpoints = _Endpoints(reactor, tls)
    agent = cast(IAgent, Agent.usingEndpointFactory(reactor, endpoints, pool=pool))
    return PooledHttpClient(agent, cast(IReactorTime, reactor), pool, endpoints)


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body already in memory, written in one go (``FileBodyProducer`` goes
    through a cooperator, a reactor turn per request for a few hundred bytes)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@dataclass(frozen=True)
class Answer:
    """An answer read whole, with what :func:`decode_error` uses of a treq response."""

    code: int
    headers: Headers
    body: bytes

    def content(self) -> Deferred[bytes]:
        return succeed(self.body)


async def agent_exchange(
    agent: IAgent,
    method: bytes,
    url: bytes,
    headers: Headers,
    data: bytes | None,
    on_headers: Callable[[], None] | None = None,
) -> Answer:
    """One request on a bare ``Agent``, its answer read whole: treq's wrappers cost more than
    the rest of a small request. ``on_headers`` is called when the answer's headers arrive."""
    producer = None if data is None else _BytesProducer(data)
    response: IResponse = await agent.request(method, url, headers, producer)
    if on_headers is not None:
        on_headers()
    body: Deferred[bytes] = Deferred()
    response.deliverBody(_BodyReader(body))
    return Answer(response.code, response.headers, await body)


class _BodyReader(Protocol):
    """Collects an answer's body (``readBody`` warns about the pool's transports)."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


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
        # One URL, or several comma-separated: members of one platform (several coordinators
        # on one store), any of which answers. Calls go to one; when it does not answer they
        # go to the next, and a member that redirects (the call is about another's group) sends
        # them to another.
        self.urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()]
        self.base_url = self.urls[0] if self.urls else base_url.rstrip("/")
        self.token = token
        self._reactor = reactor
        self._timeout = timeout
        self._built_headers: dict[tuple[str | None, bool], Headers] = {}

    def _raw_headers(self) -> dict[bytes, list[bytes]]:
        headers = {b"accept": [b"application/json"]}
        if self.token:
            headers[b"authorization"] = [b"Bearer " + self.token.encode("ascii")]
        return headers

    def headers(self) -> dict[bytes | str, list[bytes | str]]:
        return {name: list(values) for name, values in self._raw_headers().items()}

    def _agent_headers(self, with_body: bool) -> Headers:
        """The same headers as :meth:`headers`, built once (``Agent`` copies them per request)."""
        key = (self.token, with_body)
        cached = self._built_headers.get(key)
        if cached is None:
            raw = self._raw_headers()
            if with_body:
                raw[b"content-type"] = [b"application/json"]
            cached = self._built_headers[key] = Headers(raw)
        return cached

    async def call(self, method: str, path: str, body: object | None = None) -> Any:
        """The decoded JSON answer of ``method path``; raises ApiError or Unreachable."""
        url, raw, code = await self.exchange(method, path, body)
        if not raw:
            return {}
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ApiError(code, "bad_response", f"{url} did not answer JSON") from None

    async def request(
        self, method: str, path: str, answer: type[M], body: object | None = None
    ) -> M:
        """The answer of ``method path`` as an ``answer`` message, checked as it is decoded:
        :class:`~xwch.protocol.codec.ProtocolError` names the field that does not fit."""
        _, raw, _ = await self.exchange(method, path, body)
        return decode(raw or b"{}", answer, getattr(answer, "WHERE", answer.__name__))

    async def exchange(self, method: str, path: str, body: object | None) -> tuple[str, bytes, int]:
        """``(url, answer's body, status)`` of one call; raises ApiError or Unreachable.

        A URL that does not answer is left for the next of :attr:`urls` (each tried once per
        call); a ``307``/``308`` redirect is followed with the same method and body, and the
        URL it names is used from then on."""
        data = None if body is None else encode(body)
        tried: set[str] = set()
        redirects = 0
        # Where the call was redirected from, to go back to if the target does not answer.
        redirected_from: str | None = None
        while True:
            try:
                url, raw, code = await self._exchange_once(method, path, data, tried)
            except Unreachable:
                tried.add(self.base_url)
                if redirected_from is not None and redirected_from not in tried:
                    # Sent to a member that does not answer (it just died): back to the one
                    # that sent us, told so, which waits for another to serve.
                    self.base_url, redirected_from = redirected_from, None
                    continue
                untried = [u for u in self.urls if u not in tried]
                if not untried:
                    raise
                self.base_url = untried[0]
                continue
            except _Redirect as redirect:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise ApiError(
                        redirect.code, "redirect_loop", f"{method} {path}: too many redirects"
                    ) from None
                redirected_from = self.base_url
                self.base_url = _base_of(redirect.location, path)
                # The path it names, query included: a coordinator may add to it (the group
                # it placed a new worker or job in, for the member it sends it to).
                named = redirect.location[len(self.base_url) :]
                if redirect.location.startswith(self.base_url) and named.startswith("/"):
                    path = named
                if self.base_url not in self.urls:
                    self.urls.append(self.base_url)
                continue
            return url, raw, code

    async def _exchange_once(
        self, method: str, path: str, data: bytes | None, unreachable: Collection[str]
    ) -> tuple[str, bytes, int]:
        url = self.base_url + path
        try:
            if isinstance(self.http, PooledHttpClient) and url.isascii():
                response: Any = await self._direct(self.http, method, url, data, unreachable)
            else:
                headers = self.headers()
                if unreachable:
                    headers[UNREACHABLE_HEADER] = [_unreachable_value(unreachable)]
                if data is not None:
                    headers[b"content-type"] = [b"application/json"]
                response = await self.http.request(
                    method, url, headers=headers, data=data, timeout=self._timeout
                )
            if response.code in (307, 308):
                location = response.headers.getRawHeaders(b"location")
                if location:
                    raise _Redirect(response.code, location[0].decode("utf-8", "replace"))
            if response.code >= 400:
                raise await decode_error(response)
            raw = await response.content()
        except _UNREACHABLE as e:
            raise Unreachable(f"cannot reach {self.base_url}: {e}") from None
        return url, raw, response.code

    def _direct(
        self,
        http: PooledHttpClient,
        method: str,
        url: str,
        data: bytes | None,
        unreachable: Collection[str] = (),
    ) -> Deferred[Answer]:
        """One exchange on the client's bare ``Agent``; a timeout is a silence (Unreachable)."""
        headers = self._agent_headers(data is not None)
        if unreachable:
            headers = headers.copy()
            headers.setRawHeaders(UNREACHABLE_HEADER, [_unreachable_value(unreachable)])
        d = Deferred.fromCoroutine(
            agent_exchange(http.agent, method.encode("ascii"), url.encode("ascii"), headers, data)
        )
        d.addTimeout(self._timeout, self._reactor or http.reactor, _timed_out(url))
        return d

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def post(self, path: str, body: object | None = None) -> Any:
        return await self.call("POST", path, {} if body is None else body)

    async def get_as(self, path: str, answer: type[M]) -> M:
        return await self.request("GET", path, answer)

    async def post_as(self, path: str, answer: type[M], body: object | None = None) -> M:
        return await self.request("POST", path, answer, {} if body is None else body)


class _Redirect(Exception):
    def __init__(self, code: int, location: str) -> None:
        self.code = code
        self.location = location


def _base_of(location: str, path: str) -> str:
    """The base URL a redirect for ``path`` points at (``http://c2:8750`` of
    ``http://c2:8750/api/v1/work``)."""
    if location.endswith(path):
        return location[: len(location) - len(path)].rstrip("/")
    scheme, _, rest = location.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _timed_out(url: str) -> Callable[[object, float], object]:
    def on_timeout(result: object, timeout: float) -> object:
        # Cancelled on time out; depending on how far it got, a call fails with CancelledError
        # or a connection error: either way, nobody answered in time.
        if isinstance(result, Failure):
            raise TimeoutError(string=f"no answer from {url} in {timeout:.0f} s")
        return result

    return on_timeout


__all__ = ["JsonApi", "PooledHttpClient", "decode_error", "make_http_client", "treq"]
