"""One HTTP request of a transfer, with its whole answer, as a plain value.

Every way of not getting an answer (refused, reset, timed out, cut in the middle of the body)
becomes :class:`xwch.errors.Unreachable`, so the transfer loops retry one error and leave every
answer, good or bad, to :class:`Reply`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionClosed, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from xwch.errors import ApiError, Unreachable
from xwch.http import PooledHttpClient, agent_exchange, decode_error

# ResponseFailed covers ResponseNeverReceived and a body cut short; ConnectionClosed covers
# ConnectionLost and ConnectionDone. CancelledError is not here on purpose: it means our own
# caller gave up, which must stop the transfer, not retry it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectError,
    ConnectionClosed,
    DNSLookupError,
    TimeoutError,
    ResponseFailed,
    PotentialDataLoss,
)

# A packet is at most a few MiB; a minute without the whole answer means the path is dead.
REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class Reply:
    """A whole HTTP answer: status, headers and body."""

    code: int
    headers: Headers
    # The body in the pieces it came off the socket in (one piece unless asked otherwise).
    chunks: Sequence[bytes]
    response: Any
    # Seconds from sending the request to the answer's first byte, and to its last.
    first_byte: float = 0.0
    duration: float = 0.0

    @property
    def body(self) -> bytes:
        # Joining a single piece returns it as it is: no copy.
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("ascii"))
        return values[0].decode("latin-1") if values else None

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON is an :class:`ApiError`."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(self.code, "bad_response", "the answer is not JSON") from None

    async def error(self) -> ApiError:
        """This answer as the :class:`ApiError` it carries."""
        return await decode_error(self.response)


async def _exchange(
    http: HTTPClient,
    method: str,
    url: str,
    headers: Mapping[bytes, bytes],
    data: bytes | None,
    reactor: IReactorTime,
    chunked: bool,
    arrived: Callable[[int], None] | None,
) -> Reply:
    started = reactor.seconds()
    if not chunked and isinstance(http, PooledHttpClient) and url.isascii():
        # A small answer (a PUT's, an upload's state): straight on the pooled Agent.
        heard: list[float] = []
        answer = await agent_exchange(
            http.agent,
            method.encode("ascii"),
            url.encode("ascii"),
            Headers({k: [v] for k, v in headers.items()}),
            data,
            lambda: heard.append(reactor.seconds()),
        )
        return Reply(
            code=answer.code,
            headers=answer.headers,
            chunks=[answer.body],
            response=answer,
            first_byte=(heard[0] if heard else reactor.seconds()) - started,
            duration=reactor.seconds() - started,
        )
    request_headers: dict[bytes | str, list[bytes | str]] = {k: [v] for k, v in headers.items()}
    response = await http.request(method, url, headers=request_headers, data=data)
    first_byte = reactor.seconds() - started
    chunks: list[bytes] = []
    if chunked and 200 <= response.code < 300:
        # A packet of megabytes is kept in the pieces the socket gave, never joined: checked,
        # hashed and written piece by piece, it is copied once less. An error answer is read
        # whole, as Reply.error reads it again.
        if arrived is None:
            await treq.collect(response, chunks.append)
        else:

            def collect(chunk: bytes) -> None:
                chunks.append(chunk)
                arrived(len(chunk))

            await treq.collect(response, collect)
    else:
        chunks.append(await response.content())
    return Reply(
        code=response.code,
        headers=response.headers,
        chunks=chunks,
        response=response,
        first_byte=first_byte,
        duration=reactor.seconds() - started,
    )


async def exchange(
    http: HTTPClient,
    method: str,
    url: str,
    reactor: IReactorTime,
    headers: Mapping[bytes, bytes],
    data: bytes | None = None,
    timeout: float = REQUEST_TIMEOUT,
    chunked: bool = False,
    arrived: Callable[[int], None] | None = None,
) -> Reply:
    """Send one request and read its whole answer; raise Unreachable if none came.

    ``chunked``: a successful answer's body is kept in the pieces it arrived in (``chunks``),
    and ``arrived`` is told the size of each piece as it comes off the socket.
    """
    # The timeout covers the body too (treq's own covers only the headers), and is scheduled
    # on our reactor, so tests drive it with a Clock.
    d = Deferred.fromCoroutine(
        _exchange(http, method, url, headers, data, reactor, chunked, arrived)
    )
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except CONNECTION_ERRORS as e:
        raise Unreachable(f"{method} {url}: {e}") from None
