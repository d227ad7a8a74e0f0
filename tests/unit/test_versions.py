"""Every command says its release with --version; xwch-worker --help lists its commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from xwch import __version__
from xwch.client.__main__ import build_parser as client_parser
from xwch.coordinator.__main__ import _parser as coordinator_parser
from xwch.local import _parser as local_parser
from xwch.warehouse.__main__ import _parser as warehouse_parser
from xwch.worker.__main__ import parse_args as worker_args

PARSERS: list[tuple[str, Callable[[], argparse.ArgumentParser]]] = [
    ("xwch-client", client_parser),
    ("xwch-coordinator", coordinator_parser),
    ("xwch-local", local_parser),
    ("xwch-warehouse", warehouse_parser),
]


@pytest.mark.parametrize(("name", "parser"), PARSERS)
def test_version_names_the_program_and_the_release(
    name: str, parser: Callable[[], argparse.ArgumentParser], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"{name} (XWCH) {__version__}"


def test_the_worker_tells_its_version_and_lists_its_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        worker_args(["--version"])
    assert capsys.readouterr().out.strip() == f"xwch-worker (XWCH) {__version__}"
    with pytest.raises(SystemExit):
        worker_args(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in ("run", "install", "status", "uninstall"))
