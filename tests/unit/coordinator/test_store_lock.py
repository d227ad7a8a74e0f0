"""One coordinator per SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from xwch.coordinator.store_lock import StoreHeld, hold_store, sqlite_path


def test_a_second_coordinator_on_a_sqlite_store_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'coordinator.sqlite'}"
    first = hold_store(url)
    assert first is not None
    first.tell("http://127.0.0.1:8750")
    with pytest.raises(StoreHeld, match=r"http://127\.0\.0\.1:8750.*PostgreSQL"):
        hold_store(url)
    first.release()
    again = hold_store(url)
    assert again is not None
    again.release()


def test_only_sqlite_files_are_held(tmp_path: Path) -> None:
    assert hold_store("postgresql://xwch@db/xwch") is None
    assert hold_store("sqlite://") is None
    assert sqlite_path(f"sqlite:///{tmp_path}/s.sqlite") == tmp_path / "s.sqlite"
