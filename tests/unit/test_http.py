"""JsonApi over a real connection: the direct path on the pooled Agent behaves as treq's."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from xwch.errors import ApiError, Unreachable
from xwch.http import JsonApi, PooledHttpClient, make_http_client


class Echo(Resource):
    """Answers what it was sent, the headers that matter, or a scripted error."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        path = request.path.decode()
        if path == "/busy":
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"3")
            return json.dumps({"error": "busy", "message": "later"}).encode()
        if path == "/silent":
            self.held.append(request)
            return NOT_DONE_YET
        if path == "/empty":
            return b""
        request.setHeader(b"content-type", b"application/json")
        content = request.content.read() if request.content is not None else b""
        # The query, when there is one.
        query = {"uri": request.uri.decode()} if b"?" in request.uri else {}
        return json.dumps(
            {
                **query,
                "method": request.method.decode(),
                "path": path,
                "authorization": _header(request, b"authorization"),
                "content_type": _header(request, b"content-type"),
                "body": json.loads(content) if content else None,
            }
        ).encode()


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode() if isinstance(value, bytes) else value


class DirectCallTests(TestCase):
    async def _serve(self) -> tuple[JsonApi, PooledHttpClient]:
        """An echoing server on loopback, and a JsonApi calling it through a pooled client."""
        self.echo = Echo()
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(Site(self.echo))
        self.addCleanup(port.stopListening)
        http = make_http_client(IReactorTCP(reactor))
        assert http.pool is not None
        self.addCleanup(http.pool.closeCachedConnections)
        self.url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        return JsonApi(http, self.url, "s3cret"), http

    async def test_post_sends_token_and_json_and_decodes_the_answer(self) -> None:
        """A call carries the bearer token and its JSON body, and returns the decoded answer."""
        api, _ = await self._serve()
        for _ in range(2):  # the second call reuses the pooled connection and cached headers
            answer: Any = await api.post("/things", {"n": 1, "s": "é"})
            self.assertEqual(
                answer,
                {
                    "method": "POST",
                    "path": "/things",
                    "authorization": "Bearer s3cret",
                    "content_type": "application/json",
                    "body": {"n": 1, "s": "é"},
                },
            )
        answer = await api.get("/x")
        self.assertEqual(
            (answer["method"], answer["body"], answer["content_type"]), ("GET", None, None)
        )

    async def test_empty_answer_is_an_empty_object(self) -> None:
        api, _ = await self._serve()
        self.assertEqual(await api.get("/empty"), {})

    async def test_error_answer_is_an_api_error_with_retry_after(self) -> None:
        """A busy answer becomes an ApiError carrying the server's Retry-After."""
        api, _ = await self._serve()
        with self.assertRaises(ApiError) as raised:
            await api.post("/busy", {})
        self.assertEqual((raised.exception.status, raised.exception.code), (503, "busy"))
        self.assertEqual(raised.exception.retry_after, 3.0)

    async def test_closed_port_is_unreachable(self) -> None:
        _, http = await self._serve()
        closed = JsonApi(http, "http://127.0.0.1:1", "s3cret")
        with self.assertRaises(Unreachable):
            await closed.get("/x")

    async def test_silent_server_is_unreachable_after_the_timeout(self) -> None:
        """A server that never answers is a silence: Unreachable once the timeout passes."""
        _, http = await self._serve()
        clock = Clock()
        api = JsonApi(http, self.url, "s3cret", reactor=clock, timeout=5.0)
        # The timer runs on the Clock, the exchange on the reactor: wait until the server holds
        # the request, then let the time out pass.
        call = Deferred.fromCoroutine(api.call("GET", "/silent"))
        while not self.echo.held:
            await deferLater(reactor, 0.01)
        clock.advance(4.9)
        self.assertNoResult(call)
        clock.advance(0.1)
        failure = self.failureResultOf(call, Unreachable)
        self.assertIn("no answer", str(failure.value))


class Standby(Resource):
    """A coordinator standing by: sends every call to ``target``, unless the call says it
    found ``target`` not answering; then it answers itself."""

    isLeaf = True

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.told: list[str | None] = []

    def render(self, request: Request) -> bytes:
        told = _header(request, b"x-xwch-unreachable")
        self.told.append(told)
        if told is not None and self.target in told.split(","):
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"served_by": "standby"}).encode()
        request.setResponseCode(307)
        request.setHeader(b"location", (self.target + (request.uri or b"").decode()).encode())
        return json.dumps({"error": "elsewhere", "message": "served elsewhere"}).encode()


class Placing(Resource):
    """A coordinator that placed a new worker in a group held at ``target``: it sends the
    call there, the group named in the query."""

    isLeaf = True

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def render(self, request: Request) -> bytes:
        request.setResponseCode(307)
        location = self.target + (request.uri or b"").decode() + "?group=g2"
        request.setHeader(b"location", location.encode())
        return json.dumps({"error": "elsewhere", "message": "served elsewhere"}).encode()


class SeveralCoordinatorsTests(TestCase):
    """A part given several coordinators goes to another when one does not answer, and where
    a standby sends it."""

    async def _listen(self, resource: Resource) -> str:
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(Site(resource))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]

    async def _dead_url(self) -> str:
        """The URL of a port nobody listens on any more."""
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port: IListeningPort = await endpoint.listen(Site(Resource()))
        url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        await port.stopListening()
        return url

    def _client(self, urls: str) -> JsonApi:
        http = make_http_client(IReactorTCP(reactor))
        assert http.pool is not None
        self.addCleanup(http.pool.closeCachedConnections)
        return JsonApi(http, urls, "s3cret")

    async def test_a_coordinator_that_does_not_answer_is_left_for_the_next(self) -> None:
        dead, live = await self._dead_url(), await self._listen(Echo())
        api = self._client(f"{dead},{live}/")
        answer: Any = await api.post("/things", {"n": 1})
        self.assertEqual(answer["body"], {"n": 1})
        self.assertEqual(api.base_url, live)  # and stays there

    async def test_none_answering_is_unreachable(self) -> None:
        api = self._client(f"{await self._dead_url()},{await self._dead_url()}")
        with self.assertRaises(Unreachable):
            await api.get("/things")

    async def test_a_redirect_is_followed_with_its_method_and_body_and_remembered(self) -> None:
        serving = await self._listen(Echo())
        standby = Standby(serving)
        api = self._client(await self._listen(standby))
        answer: Any = await api.post("/things?wait=1", {"n": 2})
        self.assertEqual(
            (answer["method"], answer["path"], answer["body"]), ("POST", "/things", {"n": 2})
        )
        self.assertEqual(api.base_url, serving)
        await api.get("/again")
        self.assertEqual(len(standby.told), 1)  # the second call went straight there

    async def test_a_redirect_naming_a_query_is_followed_to_the_letter(self) -> None:
        holder = await self._listen(Echo())
        api = self._client(await self._listen(Placing(holder)))
        answer: Any = await api.post("/workers", {"n": 3})
        self.assertEqual((answer["uri"], answer["body"]), ("/workers?group=g2", {"n": 3}))
        self.assertEqual(api.base_url, holder)
        # Later calls go there, as they are.
        again: Any = await api.get("/workers/k1/alive")
        self.assertEqual(again["path"], "/workers/k1/alive")
        self.assertNotIn("uri", again)

    async def test_sent_to_a_coordinator_that_does_not_answer_it_goes_back_and_says_so(
        self,
    ) -> None:
        dead = await self._dead_url()
        standby = Standby(dead)
        api = self._client(await self._listen(standby))
        answer: Any = await api.get("/things")
        self.assertEqual(answer, {"served_by": "standby"})
        self.assertEqual(standby.told, [None, dead])
