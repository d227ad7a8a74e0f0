"""Opening a link in the user's browser, only where there is a graphical one.

Python's ``webbrowser`` falls back to a text browser (lynx, w3m) in a terminal with no display,
which would take over the terminal the link was printed in: on such machines the link is only
printed, for the user to open where they have a browser.
"""

from __future__ import annotations

import os
import sys
import webbrowser


def has_display() -> bool:
    if sys.platform.startswith(("darwin", "win")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str) -> bool:
    """Open ``url`` in a new browser tab; whether a browser took it."""
    if not has_display():
        return False
    try:
        return webbrowser.open_new_tab(url)
    except webbrowser.Error:
        return False
