"""A part learns the live coordinators of its platform from the one it talks to."""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from xwch.http import JsonApi, make_http_client
from xwch.member_list import learn_members


class Members(Resource):
    isLeaf = True

    def __init__(self, members: list[dict[str, object]]) -> None:
        super().__init__()
        self.members = members

    def render(self, request: Request) -> bytes:
        assert request.path == b"/api/v1/coordinators"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"coordinators": self.members}).encode()


def member(url: str, state: str = "live") -> dict[str, object]:
    return {
        "id": "c-" + url[-4:],
        "url": url,
        "state": state,
        "groups": [],
        "workers": 0,
        "running": 0,
        "last_heard": 0.0,
    }


class LearnMembersTests(TestCase):
    async def test_live_members_are_added_once_and_lost_ones_not(self) -> None:
        members: list[dict[str, object]] = []
        port: IListeningPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(Members(members))
        )
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        members += [member(url), member("http://c2:8750/"), member("http://c3:8750", "lost")]
        http = make_http_client(IReactorTCP(reactor))
        assert http.pool is not None
        self.addCleanup(http.pool.closeCachedConnections)
        api = JsonApi(http, url, "s3cret")
        self.assertEqual(await learn_members(api), ["http://c2:8750"])
        self.assertEqual(await learn_members(api), [])
        self.assertEqual(api.urls, [url, "http://c2:8750"])
        self.assertEqual(api.base_url, url)  # still talking to the one that answers
