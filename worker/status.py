"""What the running worker is doing, for ``xwch-worker status``.

The running worker writes ``<data>/status.json`` every :attr:`StatusWriter.PERIOD` seconds,
atomically (a new file renamed over the old one), so a reader never sees half of it. ``status``
reads it back: a file older than :data:`STALE_AFTER`, or naming a process that is gone, means
no worker is running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xwch.errors import ApiError
from xwch.http import JsonApi

STATUS_FILE = "status.json"
STATE_STOPPED = "stopped"


class StatusWriter(Service):
    """Writes ``snapshot()`` to ``path`` now, every :attr:`PERIOD` seconds, and when stopping."""

    log = Logger()

    PERIOD = 5.0

    def __init__(
        self, reactor: IReactorTime, path: Path, snapshot: Callable[[], dict[str, Any]]
    ) -> None:
        self._reactor = reactor
        self.path = path
        self._snapshot = snapshot
        self._loop: LoopingCall | None = None
        self._failed = False

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.write)
        self._loop.clock = self._reactor
        self._loop.start(self.PERIOD, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.write(stopped=True)

    def write(self, stopped: bool = False) -> None:
        doc = self._snapshot()
        doc["written"] = self._reactor.seconds()
        doc["pid"] = os.getpid()
        if stopped:
            doc["state"] = STATE_STOPPED
            doc["attempts"] = []
        try:
            write_json_atomically(self.path, doc)
        except OSError as e:
            if not self._failed:
                self.log.warn("cannot write {path}: {error}", path=self.path, error=e)
            self._failed = True
            return
        self._failed = False


def write_json_atomically(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


class ContactRecorder(JsonApi):
    """A :class:`JsonApi` that remembers when the other side last answered (error or not)."""

    def __init__(
        self,
        *args: Any,
        clock: Callable[[], float],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._now = clock
        self.last_contact: float | None = None

    async def exchange(self, method: str, path: str, body: object | None) -> tuple[str, bytes, int]:
        try:
            answer = await super().exchange(method, path, body)
        except ApiError:
            self.last_contact = self._now()
            raise
        self.last_contact = self._now()
        return answer


# Reading it back


STALE_AFTER = 6 * StatusWriter.PERIOD


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status written at ``path``; None when there is none (or it is unreadable)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(
    doc: Mapping[str, Any] | None, now: float, alive: Callable[[int], bool] = process_alive
) -> tuple[bool, str]:
    """Whether the worker that wrote ``doc`` still runs, and if not, why one thinks so."""
    if doc is None:
        return False, "no worker has run here (no status file)"
    written = doc.get("written")
    pid = doc.get("pid")
    if doc.get("state") == STATE_STOPPED:
        return False, f"the worker stopped {_ago(now, written)}"
    if isinstance(pid, int) and not alive(pid):
        return (
            False,
            f"the worker (pid {pid}) is gone; its last status is from {_ago(now, written)}",
        )
    if not isinstance(written, (int, float)) or now - written > STALE_AFTER:
        return False, f"the last status is stale (written {_ago(now, written)})"
    return True, f"running (pid {pid})"


def format_status(doc: Mapping[str, Any] | None, now: float, running: bool, why: str) -> str:
    """``xwch-worker status`` for a person."""
    if doc is None or not running:
        return f"xwch-worker: not running: {why}\n"
    lines = [f"xwch-worker: {why}, worker {doc.get('worker_id') or '(registering)'}"]
    lines.append(f"  coordinator:  {doc.get('coordinator')}")
    governor = doc.get("governor") or {}
    slots = doc.get("slots")
    attempts = doc.get("attempts") or []
    if governor.get("computing", True):
        state = f"computing, {len(attempts)} attempt(s) held, at most {slots} at once"
    else:
        since = governor.get("suspended_since")
        state = f"suspended {_ago(now, since)}: {governor.get('reason')}"
    lines.append(f"  state:        {state}")
    for a in attempts:
        lines.append(f"    {a.get('attempt')}  {a.get('job')}/{a.get('task')}  {a.get('state')}")
    cache = doc.get("cache") or {}
    lines.append(
        f"  cache:        {_size(cache.get('used'))} of {_size(cache.get('limit'))}, "
        f"{cache.get('objects')} object(s), {cache.get('evicted')} evicted since start"
    )
    prefs = doc.get("preferences") or {}
    shown = ", ".join(
        f"{k} {_value(k, v)}"
        for k, v in prefs.items()
        if v not in (None, "") and not k.endswith("_per_task")
    )
    lines.append(f"  limits:       {shown}")
    sandbox = doc.get("sandbox") or {}
    limits = sandbox.get("limits") or {}
    lines.append(
        f"  per task:     memory {_size(limits.get('AS'))}, "
        f"CPU time {_value('cpu_time_per_task', limits.get('CPU'))}, "
        f"file size {_size(limits.get('FSIZE'))}, "
        f"{sandbox.get('processes') or 'any number of'} processes"
    )
    lines.append(
        f"  sandbox:      runs tasks as {sandbox.get('user') or 'the worker user'}, "
        f"writes confined by Landlock: {'yes' if sandbox.get('landlock') else 'no'}"
    )
    idle = governor.get("idle_seconds")
    load = governor.get("other_cpu_load")
    lines.append(
        "  machine:      "
        + ("idle unknown" if idle is None else f"idle {idle / 60:.1f} min")
        + ", "
        + ("other programs' CPU unknown" if load is None else f"other programs' CPU {load:.0f}%")
    )
    lines.append(f"  last contact: {_ago(now, doc.get('last_contact'))}")
    return "\n".join(lines) + "\n"


def _ago(now: float, then: object) -> str:
    if not isinstance(then, (int, float)):
        return "never"
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _size(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "no limit"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _value(key: str, value: object) -> str:
    if key in ("memory_per_task", "file_size_per_task", "cache_limit"):
        return _size(value)
    if key in ("upload_rate", "download_rate"):
        return f"{_size(value)}/s"
    if key == "cpu_time_per_task" and isinstance(value, (int, float)):
        return f"{value / 3600:g} h"
    if key == "max_cpu_load":
        return f"{value}%"
    return str(value)
