"""Workers start a coordinator: ``--spawn-coordinator --db URL``.

On a trusted machine that may reach the store, a worker that has heard from no coordinator
for ``after`` seconds starts ``xwch-coordinator --db URL --listen ENDPOINT`` on its own machine,
then adds the URL it announces to the coordinators it knows, where its next call goes. The
coordinator runs detached (``xwch/detached.py``): in a session of its own, its output in
``coordinator.log`` of the worker's data folder, and it outlives the worker; the worker writes
its pid and URL to ``coordinator.json`` there, and a worker started again takes it back if it
still runs. Several workers starting coordinators at once is safe: the coordinators share the
store, and its group locks let exactly one of them serve.

At most one start every ``START_INTERVAL`` seconds, none while the one started still runs (it
may only be slow to start; another could not listen on its address anyway).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.detached import Ended, Launch

from .status import process_alive, write_json_atomically

# What the coordinator prints once listening (xwch/coordinator/__main__.py).
LISTENING = "xwch-coordinator listening on "
LOG_FILE = "coordinator.log"
STATE_FILE = "coordinator.json"
DEFAULT_LISTEN = "tcp:8750"
DEFAULT_AFTER = 30.0


class KnownCoordinators(Protocol):
    """The worker's client of the coordinators (a ``ContactRecorder``): when one last answered,
    and the URLs it tries, in order."""

    last_contact: float | None
    urls: list[str]
    base_url: str


@dataclass(frozen=True)
class SpawnSettings:
    db: str
    listen: str = DEFAULT_LISTEN
    after: float = DEFAULT_AFTER
    # The URL others reach the coordinator at (default: the address it listens on).
    public_url: str | None = None


def coordinator_argv(settings: SpawnSettings) -> list[str]:
    argv = [sys.executable, "-m", "xwch.coordinator", "--db", settings.db]
    argv += ["--listen", settings.listen]
    if settings.public_url:
        argv += ["--public-url", settings.public_url]
    return argv


def learn(known: KnownCoordinators, url: str) -> None:
    """Add ``url`` to the coordinators known, and send the next call there."""
    url = url.rstrip("/")
    if url not in known.urls:
        known.urls.append(url)
    known.base_url = url


class CoordinatorStarter(Service):
    """Starts a coordinator here when no coordinator has answered for a while."""

    log = Logger()

    # How often the silence is measured, and the log of a started one read.
    CHECK_INTERVAL = 0.5
    # At most one coordinator started this often.
    START_INTERVAL = 60.0
    # A coordinator that has not said where it listens after this long is given up on.
    ANNOUNCE_TIMEOUT = 120.0

    def __init__(
        self,
        reactor: IReactorTime,
        known: KnownCoordinators,
        launch: Launch,
        settings: SpawnSettings,
        data: Path,
        alive: Callable[[int], bool] = process_alive,
    ) -> None:
        self._reactor = reactor
        self._known = known
        self._launch = launch
        self.settings = settings
        self.log_path = data / LOG_FILE
        self.state_path = data / STATE_FILE
        self._alive = alive
        # Silence is counted from the later of the last answer and this (start, last spawn).
        self._since = reactor.seconds()
        self._last_start: float | None = None
        # The coordinator started (or taken back), while it runs; and where its log's new
        # lines begin, while its address is not known.
        self.pid: int | None = None
        self.url: str | None = None
        self._announce_from: int | None = None
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._take_back()
        self._loop.start(self.CHECK_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _take_back(self) -> None:
        """A coordinator this worker started before it restarted, still running: known again."""
        state = _read_state(self.state_path)
        pid, url = state.get("pid"), state.get("url")
        if isinstance(pid, int) and isinstance(url, str) and self._alive(pid):
            self.pid, self.url = pid, url
            learn(self._known, url)
            self.log.info(
                "the coordinator started before (pid {pid}) runs at {url}", pid=pid, url=url
            )

    def check(self) -> None:
        now = self._reactor.seconds()
        if self._announce_from is not None:
            self._read_announce(now)
        if self.pid is not None and not self._alive(self.pid):
            self.pid = None  # gone without our knowing how (taken back after a restart)
        heard = max(self._known.last_contact or self._since, self._since)
        if now - heard < self.settings.after or self.pid is not None:
            return
        if self._last_start is not None and now - self._last_start < self.START_INTERVAL:
            return
        self._start(now, now - heard)

    def _start(self, now: float, silence: float) -> None:
        self._last_start = now
        self._since = now
        argv = coordinator_argv(self.settings)
        try:
            offset = self.log_path.stat().st_size
        except OSError:
            offset = 0
        shown = " ".join(_hide_password(a) for a in argv)
        try:
            pid = self._launch(argv, self.log_path, dict(os.environ), self._ended)
        except OSError as e:
            self.log.error(
                "cannot start a coordinator ({command}): {error}", command=shown, error=e
            )
            return
        self.pid, self.url, self._announce_from = pid, None, offset
        self._write_state(now)
        self.log.warn(
            "no coordinator answered for {silence:.0f} s: started one here: {command} "
            "(pid {pid}, log {log})",
            silence=silence,
            command=shown,
            pid=pid,
            log=str(self.log_path),
        )

    def _read_announce(self, now: float) -> None:
        assert self._announce_from is not None
        url = _announced(self.log_path, self._announce_from)
        if url is not None:
            self._announce_from = None
            self.url = url
            self._write_state(now)
            learn(self._known, url)
            self.log.info("registering with the coordinator started here, at {url}", url=url)
        elif self._last_start is not None and now - self._last_start >= self.ANNOUNCE_TIMEOUT:
            self._announce_from = None
            self.log.warn(
                "the coordinator started here did not say where it listens; see {log}",
                log=str(self.log_path),
            )

    def _ended(self, ended: Ended) -> None:
        if ended.pid == self.pid:
            self.pid = None
        if self._announce_from is not None:
            # Its last words may be its announcement (then it just ended) or why it could not start.
            self._read_announce(self._reactor.seconds())
            self._announce_from = None
        self.log.warn(
            "the coordinator started here (pid {pid}) ended, {how}: {last}",
            pid=ended.pid,
            how=str(ended),
            last=_last_line(self.log_path),
        )

    def _write_state(self, now: float) -> None:
        doc: dict[str, Any] = {
            "pid": self.pid,
            "url": self.url,
            "log": str(self.log_path),
            "started": now,
        }
        try:
            write_json_atomically(self.state_path, doc)
        except OSError as e:
            self.log.warn("cannot write {path}: {error}", path=str(self.state_path), error=e)


def _announced(log: Path, offset: int) -> str | None:
    """The URL a coordinator announced in ``log`` past ``offset``, if it did yet."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(LISTENING):
            return line[len(LISTENING) :].strip()
    return None


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(nothing logged)"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _hide_password(arg: str) -> str:
    """A database URL as it may be logged: ``postgresql://u:***@host/db``."""
    scheme, sep, rest = arg.partition("://")
    if not sep or "@" not in rest:
        return arg
    credentials, _, place = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{place}"
