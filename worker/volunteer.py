"""A volunteer's worker, whole: the pull loop and everything that keeps it polite and safe.

:class:`Volunteer` is the service tree ``xwch-worker run`` starts: the fork server that starts
attempts (where the compiled launcher, which needs no server, could not be built), the status
writer, the preferences watcher, the governor and the
:class:`WorkerService`, in that order (stopped in the reverse). It builds what they share: the
transfer pacer (with the volunteer's rate caps), the object cache (with its size limit), and the
executor of each attempt (with the sandbox this machine can give and the per-task limits in
force when the attempt starts).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFDSet, IReactorProcess, IReactorTime
from twisted.internet.threads import deferToThread

from xwch.http import JsonApi
from xwch.protocol.objects import Source
from xwch.protocol.wire import CACHE_REPORT_MAX
from xwch.protocol.worker import Assignment, HostFacts, Policy
from xwch.transfer.download import download_object
from xwch.transfer.pacing import PacketPacer
from xwch.transfer.upload import upload_file

from .attempts import Attempt
from .cache import ObjectCache
from .checkpointer import Checkpointer
from .crashsafe import begin_run, current_boot_id, end_run
from .executor import AttemptExecutor, local_path
from .files import remove_tree
from .governor import Governor
from .last_registration import LastRegistration
from .link import LocateSite
from .native_server import NativeServerSpawner, spawn_server_wanted
from .preferences import Preferences, PreferencesWatcher
from .program_identity import VerifiedPrograms
from .readings import HostReadings, SystemReadings
from .releases import FolderReleases, off_reactor
from .sandbox import Sandbox, plan_sandbox
from .service import WorkerService
from .spawner import AttemptSpawner, ForkServerSpawner, NativeSpawner
from .status import STATUS_FILE, StatusWriter
from .workfolders import WorkFolders

# The most bytes of a task's checkpoint a worker saves unless told otherwise (--max-checkpoint).
DEFAULT_MAX_CHECKPOINT = 1 << 30

# Traversable by the sandbox user (not listable): a worker running as root runs tasks as nobody,
# who must reach the programs and the working directories.
SHARED_FOLDER_BITS = 0o011


class Volunteer(MultiService):
    """A worker with its cache and work folders in ``data_dir``, steered by ``preferences``."""

    def __init__(
        self,
        reactor: IReactorTime,
        coordinator: JsonApi,
        warehouses: HTTPClient,
        data_dir: Path,
        facts: HostFacts,
        preferences: Preferences,
        preferences_path: Path | None = None,
        readings: HostReadings | None = None,
        sandbox: Sandbox | None = None,
        localtime: Callable[[float], time.struct_time] = time.localtime,
        locate_site: LocateSite | None = None,
        native_launcher: Path | None = None,
        watch_others: bool = False,
        max_checkpoint: int = DEFAULT_MAX_CHECKPOINT,
    ) -> None:
        """``watch_others``: transfers make way while other programs' traffic shows on the
        host's interfaces, and (preference ``watch_router``) other devices' traffic on the home
        router's counters (the real worker; tests on a fake clock leave it).
        ``max_checkpoint``: the most bytes of a task's checkpoint this worker saves."""
        super().__init__()
        self._reactor = reactor
        self._coordinator = coordinator
        self.facts = facts
        self.preferences = preferences
        self.pacer = PacketPacer(
            policy=Policy(),
            rate_cap=None,
            reactor=reactor,
            upload_cap=preferences.upload_rate,
            download_cap=preferences.download_rate,
            watch_others=watch_others,
        )
        self._watch_others = watch_others
        self._watch_router(preferences)
        pacer = self.pacer

        async def fetch(sources: Sequence[Source], digest: str, size: int, dest: Path) -> None:
            # Without fsync: the cache is dropped if a crash may have torn it (crashsafe).
            await download_object(
                warehouses, sources, digest, size, dest, pacer, reactor, durable=False
            )

        async def store(url: str, digest: str, size: int, path: Path, capability: str) -> None:
            await upload_file(warehouses, url, digest, size, path, capability, pacer, reactor)

        begin_run(data_dir / "cache", current_boot_id())
        self.cache = ObjectCache(data_dir / "cache", fetch, preferences.cache_limit)
        work_root = data_dir / "work"
        # Attempts are never resumed after a restart (the coordinator relaunched them
        # elsewhere): whatever a previous run left in the work folder is garbage.
        remove_tree(work_root)
        work_root.mkdir(parents=True)
        if os.geteuid() == 0:
            # Tasks read their inputs through links in their working directory; they reach
            # only these folders, for the programs and bundles.
            root = self.cache.root
            _open_to_sandbox([data_dir, work_root, root, root / "programs", root / "bundles"])
        self.sandbox = (
            sandbox if sandbox is not None else plan_sandbox([work_root, self.cache.root])
        )
        processes = IReactorProcess(reactor)
        self.spawner: AttemptSpawner
        if native_launcher is not None and spawn_server_wanted():
            # Started at the first attempt; stopped last, once every attempt has ended.
            spawn_server = NativeServerSpawner(reactor, str(native_launcher))
            spawn_server.setServiceParent(self)
            self.spawner = spawn_server
        elif native_launcher is not None:
            self.spawner = NativeSpawner(IReactorFDSet(reactor), str(native_launcher))
        else:
            # Started at the first attempt; stopped last, once every attempt has ended.
            fork_server = ForkServerSpawner(reactor, sys.executable)
            fork_server.setServiceParent(self)
            self.spawner = fork_server
        self._executors: weakref.WeakSet[AttemptExecutor] = weakref.WeakSet()
        folders = WorkFolders(work_root)
        releases = FolderReleases(reactor, folders)
        # Chunks of checkpoints on their way to a warehouse, a folder per attempt.
        staging_root = data_dir / "checkpoints"
        remove_tree(staging_root)
        cache = self.cache

        def checkpointer(executor: AttemptExecutor) -> Checkpointer:
            a = executor.assignment
            assert a.checkpoint is not None

            def fetch(digest: str, size: int) -> Deferred[Path]:
                return Deferred.fromCoroutine(cache.ensure(digest, size, a.sources.get(digest, ())))

            return Checkpointer(
                reactor,
                a.attempt,
                a.checkpoint,
                local_path(executor.workdir, a.checkpoint.path.rstrip("/")),
                staging_root / a.attempt,
                max_checkpoint,
                self.service.link,
                store,
                fetch,
                lambda call, *args: off_reactor(reactor, call, *args),
                executor.note,
            )

        programs = VerifiedPrograms()

        def new_attempt(assignment: Assignment) -> Attempt:
            executor = AttemptExecutor(
                processes,
                self.cache,
                work_root,
                assignment,
                sandbox=self.attempt_sandbox(),
                spawner=self.spawner,
                folders=folders,
                releases=releases,
                trusted_keys=frozenset(facts.trusted_keys),
                checkpoints=checkpointer,
                programs=programs,
            )
            self._executors.add(executor)
            return executor

        self.service = WorkerService(
            reactor,
            coordinator,
            facts,
            new_attempt,
            store,
            pacer,
            evictions=self.cache,
            locate_site=locate_site,
            cache_contents=lambda: self.cache.digests(CACHE_REPORT_MAX),
            work_ahead=True,
            last_registration=LastRegistration(data_dir / "last-registration"),
        )
        self.governor = Governor(
            reactor,
            readings if readings is not None else SystemReadings(),
            self.service,
            preferences,
            facts.cores,
            groups=self.process_groups,
            localtime=localtime,
        )
        self.status = StatusWriter(reactor, data_dir / STATUS_FILE, self.snapshot)
        self.status.setServiceParent(self)
        self.watcher: PreferencesWatcher | None = None
        if preferences_path is not None:
            self.watcher = PreferencesWatcher(reactor, preferences_path, preferences, self.apply)
            self.watcher.setServiceParent(self)
        self.governor.setServiceParent(self)
        self.service.setServiceParent(self)

    def stopService(self) -> Deferred[None]:
        async def stop() -> None:
            await maybeDeferred(super(Volunteer, self).stopService)
            # Every attempt is over and every download has ended: the cache can be trusted.
            end_run(self.cache.root)

        return Deferred.fromCoroutine(stop())

    def _watch_router(self, preferences: Preferences) -> None:
        if self._watch_others and preferences.watch_router:
            # miniupnpc blocks: the router is asked from the reactor's thread pool.
            self.pacer.watch_gateway(deferToThread)
        else:
            self.pacer.gateway = None

    def apply(self, preferences: Preferences) -> None:
        """New preferences, in force at once (per-task limits: for attempts starting from now)."""
        self.preferences = preferences
        self.governor.update(preferences)
        self.cache.set_limit(preferences.cache_limit)
        self.pacer.set_upload_cap(preferences.upload_rate)
        self.pacer.set_download_cap(preferences.download_rate)
        self._watch_router(preferences)

    def attempt_sandbox(self) -> Sandbox:
        """The sandbox of an attempt starting now."""
        p = self.preferences
        limits = {
            "CPU": p.cpu_time_per_task,
            "AS": p.memory_per_task or self.facts.memory,
            "FSIZE": p.file_size_per_task or p.cache_limit,
        }
        return self.sandbox.with_limits(limits, p.processes_per_task)

    def process_groups(self) -> Collection[int]:
        """The process groups of the attempts' running programs (XWCH's own CPU use)."""
        return [g for e in list(self._executors) if (g := e.process_group) is not None]

    def snapshot(self) -> dict[str, Any]:
        """What ``xwch-worker status`` shows."""
        usage = self.cache.usage()
        last_contact = getattr(self._coordinator, "last_contact", None)
        return {
            "state": "computing" if self.governor.reason is None else "suspended",
            "worker_id": self.service.worker_id,
            "coordinator": self._coordinator.base_url,
            "name": self.facts.name,
            "slots": min(self.governor.slots, self.facts.slots),
            "attempts": [dataclasses.asdict(h) for h in self.service.held_attempts()],
            "governor": self.governor.describe(),
            "cache": dataclasses.asdict(usage),
            "preferences": self.preferences.describe(),
            "sandbox": self.attempt_sandbox().describe(),
            "last_contact": last_contact,
        }


def _open_to_sandbox(folders: Sequence[Path]) -> None:
    for folder in folders:
        try:
            mode = folder.stat().st_mode
            os.chmod(folder, (mode & 0o7777) | SHARED_FOLDER_BITS)
        except OSError:
            continue
