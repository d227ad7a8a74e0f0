"""Parts learn the coordinators of their platform from any one of them, and remember them.

A worker or warehouse is given one coordinator URL or a few; every member knows the others
(``GET /api/v1/coordinators``). Asking now and then, a part adds the live members to the URLs it
may call, so that when the one it talks to dies it can go to one it was never told of.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.errors import ApiError, Unreachable
from xwch.http import JsonApi
from xwch.protocol.cluster import CoordinatorList
from xwch.protocol.codec import ProtocolError
from xwch.protocol.wire import API_PREFIX

log = Logger()

# How often a part asks: members come and go over minutes, not seconds.
LEARN_INTERVAL = 60.0


async def learn_members(api: JsonApi) -> list[str]:
    """Add the live members' URLs to those ``api`` may call; the URLs newly learnt."""
    members = await api.get_as(f"{API_PREFIX}/coordinators", CoordinatorList)
    learnt = []
    for member in members.coordinators:
        url = member.url.rstrip("/")
        if member.state == "live" and url not in api.urls:
            api.urls.append(url)
            learnt.append(url)
    if learnt:
        log.info("coordinators: learnt of {urls}", urls=", ".join(learnt))
    return learnt


def keep_learning(reactor: IReactorTime, api: JsonApi) -> LoopingCall:
    """Ask at once, then every LEARN_INTERVAL; a failure waits for the next round."""

    def once() -> Deferred[object]:
        d: Deferred[object] = ensureDeferred(learn_members(api))
        d.addErrback(_not_now)
        return d

    loop = LoopingCall(once)
    loop.clock = reactor
    loop.start(LEARN_INTERVAL, now=True)
    return loop


def _not_now(failure: object) -> None:
    error = getattr(failure, "value", failure)
    if isinstance(error, (Unreachable, ApiError, ProtocolError)):
        log.debug("coordinators: cannot learn the members now: {error}", error=error)
        return
    log.warn("coordinators: cannot learn the members: {error}", error=error)
