"""Shared fixtures: the store backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import fresh_database, postgres_or_skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend; PostgreSQL skipped where none answers (but
    never in CI, see ``postgres_or_skip``)."""
    if request.param == "postgresql":
        postgres_or_skip()
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: trial's ``mktemp`` and default output folders land
    there, never in the checkout."""
    monkeypatch.chdir(tmp_path)
