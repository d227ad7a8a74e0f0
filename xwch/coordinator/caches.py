"""The catalog of workers' caches: which worker holds which object, as far as the coordinator knows.

A hint for the scheduler, never a promise: a worker may have evicted an object since its last
Work Alive said so. Being wrong costs a download, not correctness, which is what lets the catalog
stay compact. Objects are known by a prefix of their digest (:data:`PREFIX_LENGTH` hex digits,
64 bits): a worker reports its whole cache at registration in a quarter of the bytes, and two
objects sharing a prefix among a million is a chance in ten million.

The coordinator learns additions without being told: a worker given an attempt fetches its
inputs, and a worker reporting a success keeps its outputs. Only evictions must be reported.
"""

from __future__ import annotations

from collections.abc import Iterable

from xwch.protocol.wire import CACHE_PREFIX

PREFIX_LENGTH = CACHE_PREFIX


def prefix(digest: str) -> str:
    return digest[:PREFIX_LENGTH]


class WorkerCaches:
    """Objects by worker, and workers by object."""

    def __init__(self) -> None:
        self._by_worker: dict[str, set[str]] = {}
        self._holders: dict[str, set[str]] = {}

    def __len__(self) -> int:
        """How many (worker, object) pairs are known."""
        return sum(len(held) for held in self._by_worker.values())

    def add(self, worker_id: str, digests: Iterable[str]) -> list[str]:
        """Record that ``worker_id`` caches ``digests``; the prefixes that are new for it."""
        held = self._by_worker.setdefault(worker_id, set())
        new = []
        for digest in digests:
            key = prefix(digest)
            if key in held:
                continue
            held.add(key)
            self._holders.setdefault(key, set()).add(worker_id)
            new.append(key)
        return new

    def remove(self, worker_id: str, digests: Iterable[str]) -> None:
        held = self._by_worker.get(worker_id)
        if held is None:
            return
        for digest in digests:
            key = prefix(digest)
            if key not in held:
                continue
            held.discard(key)
            self._drop_holder(key, worker_id)

    def replace(self, worker_id: str, digests: Iterable[str]) -> list[str]:
        """The worker's whole cache (its registration): forget what it held before."""
        self.forget(worker_id)
        return self.add(worker_id, digests)

    def forget(self, worker_id: str) -> None:
        for key in self._by_worker.pop(worker_id, set()):
            self._drop_holder(key, worker_id)

    def has(self, worker_id: str, digest: str) -> bool:
        held = self._by_worker.get(worker_id)
        return held is not None and prefix(digest) in held

    def holders(self, digest: str) -> frozenset[str]:
        return frozenset(self._holders.get(prefix(digest), ()))

    def _drop_holder(self, key: str, worker_id: str) -> None:
        holders = self._holders.get(key)
        if holders is None:
            return
        holders.discard(worker_id)
        if not holders:
            del self._holders[key]
