"""The coordinator's requests: JSON bodies are left as they came."""

from __future__ import annotations

import io

from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.test.requesthelper import DummyChannel

from xwch.coordinator.web import JsonRequest


class _Leaf(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        return b"{}"


def test_post_bodies_are_not_parsed_as_forms() -> None:
    """A POST body reaches the handlers untouched, even one declared as a form; the query
    string is still read."""
    channel = DummyChannel()
    channel.site = Site(_Leaf())
    request = JsonRequest(channel)
    request.content = io.BytesIO()
    request.content.write(b"a=b")  # as the channel leaves it: written, at its end
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.requestReceived(b"POST", b"/api/v1/x?q=1", b"HTTP/1.1")
    assert request.args == {b"q": [b"1"]}
