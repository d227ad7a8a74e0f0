"""What every XWCH program does once started: keep the garbage collector off what it imported,
and (servers) allow enough open descriptors.

Each XWCH program imports some 600 modules (Twisted, treq, cryptography, SQLAlchemy...): some
50,000 objects that live as long as the process. A full collection walks all of them, about
30 ms on a small machine, and CPython makes one now and then as objects accumulate (during a big
job's creation, say), and once more on the way out. None of those objects is ever garbage.
:func:`freeze_what_is_loaded` moves them out of the collector's sight (``gc.freeze``): later
collections walk only what came after, and a short command such as ``xwch-client status`` exits
about 0.1 s sooner.
"""

from __future__ import annotations

import gc
import resource
import signal
from collections.abc import Callable
from typing import Any


def freeze_what_is_loaded() -> None:
    """Exempt every object alive now from garbage collection: call it once the imports are
    done (and, in a short command, again before exiting)."""
    gc.freeze()


# Enough for tens of thousands of workers and transfers; the hard limit may allow more.
OPEN_FILES_WANTED = 65536


def raise_open_file_limit(
    get: Callable[[int], tuple[int, int]] = resource.getrlimit,
    set_: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> int:
    """Raise the soft limit on open descriptors towards the hard one; the limit now.

    A coordinator holds a connection or two per worker (one waiting for work), a warehouse one
    per transfer: the usual soft limit of 1,024 would refuse connections past a few hundred
    workers, while the hard limit, which a process may reach on its own, is often far higher.
    """
    soft, hard = get(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            set_(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft
        return wanted
    return soft


def stop_once_on_signals(reactor: Any) -> None:
    """SIGTERM or SIGINT stop the reactor once; another while it stops is ignored.

    Twisted's own handlers call ``reactor.stop`` at every signal, and the second, while the
    reactor is already stopping (a supervisor that signals twice, Ctrl-C pressed again), logs a
    ReactorNotRunning traceback. Call it from within the running reactor: Twisted installs its
    handlers as it starts.
    """
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stopping:
            return
        stopping.append(signum)
        (reactor.sigInt if signum == signal.SIGINT else reactor.sigTerm)(signum, None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
