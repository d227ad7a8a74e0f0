"""Where a download's packets land: pieces appended in order, hashed, whatever the kernel takes."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from tests.fakes.warehouse import result_of
from xwch.transfer import sink
from xwch.transfer.sink import PartSink, write_all

NOISE = random.Random(3).randbytes(10_000)
PIECES = [NOISE[:1], b"", NOISE[1:4000], NOISE[4000:]]


def test_pieces_are_written_in_order_even_when_the_kernel_takes_a_few_bytes_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short writev (a disk filling up, a signal) is followed by the rest, nothing twice."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        # At most 1,500 bytes a call, cut in the middle of pieces.
        budget, taken = 1500, []
        for b in buffers:
            taken.append(b[:budget])
            budget -= len(taken[-1])
            if budget == 0:
                break
        return real_writev(fd, taken)

    monkeypatch.setattr(sink.os, "writev", short_writev)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        write_all(fd, PIECES)
        write_all(fd, [b"end"])
    finally:
        os.close(fd)
    assert path.read_bytes() == NOISE + b"end"


def test_more_pieces_than_one_writev_takes_are_all_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past IOV_MAX pieces the writes go on in several calls."""
    monkeypatch.setattr(sink, "IOV_MAX", 3)
    path = tmp_path / "out"
    pieces = [NOISE[i : i + 700] for i in range(0, len(NOISE), 700)]
    with path.open("ab") as f:
        write_all(f.fileno(), pieces)
    assert path.read_bytes() == NOISE


def test_no_writev_is_given_more_than_write_max_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pieces are grouped up to WRITE_MAX bytes a call, and a bigger piece goes in slices: big
    writes cost ext4 twice the CPU of 1 MiB ones."""
    real_writev = os.writev
    sizes: list[int] = []

    def counting_writev(fd: int, buffers: list[memoryview]) -> int:
        sizes.append(sum(len(b) for b in buffers))
        return real_writev(fd, buffers)

    monkeypatch.setattr(sink, "WRITE_MAX", 3000)
    monkeypatch.setattr(sink.os, "writev", counting_writev)
    path = tmp_path / "out"
    with path.open("ab") as f:
        write_all(f.fileno(), [NOISE[:1000], NOISE[1000:2000], NOISE[2000:2500], NOISE[2500:]])
    assert path.read_bytes() == NOISE
    # 2,500 bytes, as the next piece would not fit; then the 7,500 bytes piece in slices.
    assert sizes == [2500, 3000, 3000, 1500]


def test_a_sink_appends_packets_and_hashes_them(tmp_path: Path) -> None:
    """Packets in pieces land after what the part file held, and the hash covers them all."""
    path = tmp_path / "object.part"
    path.write_bytes(b"held")
    hasher = hashlib.sha256(b"held")
    with path.open("ab") as out:
        s = PartSink(out, hasher, Clock(), durable=False)
        result_of(Deferred.fromCoroutine(s.write(PIECES)))
        result_of(Deferred.fromCoroutine(s.write([b"tail"])))
        result_of(Deferred.fromCoroutine(s.close()))
    assert path.read_bytes() == b"held" + NOISE + b"tail"
    assert hasher.hexdigest() == hashlib.sha256(b"held" + NOISE + b"tail").hexdigest()
