"""Every value from a job file or a worker goes through here before it reaches a page.

Task ids, host names and logs are written by whoever submits a job or runs a worker: shown
unescaped, a task id like ``<script>...`` would run in the operator's browser.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from xwch.protocol.states import TaskStatus

# States drawn with their own color; anything else is drawn as "unknown".
KNOWN_STATES = frozenset(
    (*TaskStatus, "alive", "lost", "quarantined", "distrusted", "busy", "suspended")
)


def text(value: object) -> str:
    """A value as HTML text or an attribute's value (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def segment(value: str) -> str:
    """A value as one segment of a URL path (``/`` and everything else percent-encoded)."""
    return quote(value, safe="")


def state_class(state: str) -> str:
    """A CSS class for a state: only known names, so a worker cannot inject a class."""
    return f"s-{state}" if state in KNOWN_STATES else "s-unknown"
