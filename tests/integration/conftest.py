"""Fixtures of the whole-platform tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.support import NATIVE, ROOT


@pytest.fixture(scope="session")
def native_build() -> Path:
    """The native task programs, built once per test session."""
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT / "native")],
        check=True,
        capture_output=True,
    )
    return NATIVE
