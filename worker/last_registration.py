"""The id this worker was last registered under, kept in its data folder across restarts.

A worker that starts again (the machine rebooted, the service restarted, a crash) registers
anew and gets a new id; its previous registration's attempts died with the previous process.
Told that id (``replaces`` in the Register Request), the coordinator gives those attempts to
other workers at once rather than after the old registration's silence times out, and the
worker is not listed twice meanwhile.
"""

from __future__ import annotations

import os
from pathlib import Path


class LastRegistration:
    """The file holding the last worker id (written whole or not at all)."""

    # Worker ids are short; anything longer in the file is not one.
    LONGEST = 64

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        """The id last written; None if none was, or the file is unreadable or not an id."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        if not text or len(text) > self.LONGEST or not text.isprintable() or " " in text:
            return None
        return text

    def write(self, worker_id: str) -> None:
        """Keep ``worker_id`` (written to a temporary file, then renamed over the old one, so a
        crash leaves the old id or the new one). Failing to write costs only the wait this file
        saves, so it is not an error."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(worker_id + "\n", encoding="ascii")
            os.replace(temporary, self.path)
        except OSError:
            pass
