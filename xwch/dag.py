"""The job file (``dag.json``): its model and its validation.

The contract is the job-file format (``docs/job-file.md``). The client loads the user's file with
:func:`load_job_file`; the coordinator checks what it receives again with :func:`parse_wire_job`,
because it cannot trust a client. Both give the same :class:`Job`: fully expanded (no
``foreach``, no glob) with its tasks in a topological order.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from xwch.dagcheck import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_COST,
    DEFAULT_PRIORITY,
    DEFAULT_RETRIES,
    DIGEST_RE,
    INT32_MAX,
    MAX_TASKS,
    PLATFORM_RE,
    SIZE_MAX,
    TASK_ID_RE,
    TASK_ID_RULE,
    VARIABLE_RE,
    Checker,
    TaskIndex,
    entry_path,
    find_clash,
    inside_checkpoint,
    is_glob,
    item_path,
    json_object_from_pairs,
    json_type,
    key_path,
    quote,
    topological_order,
)
from xwch.dagexpand import Draft, expand, parse_template
from xwch.dagreplication import KEYS as REPLICATION_KEYS
from xwch.dagreplication import (
    Replication,
    ReplicationKeys,
    check_job_keys_used,
    from_wire,
    parse_keys,
    resolve,
)
from xwch.errors import JobFileError
from xwch.signing import ProgramSignature, SignatureError, normalized_key, verify_program

__all__ = [
    "MAX_TASKS",
    "PLATFORM_ANY",
    "WIRE_SOURCE",
    "Binary",
    "BinaryVariant",
    "FileEntry",
    "InputRef",
    "Job",
    "Task",
    "load_job_file",
    "parse_job_document",
    "parse_wire_job",
]

PLATFORM_ANY = "any"
WIRE_SOURCE = "<job>"


@dataclass(frozen=True)
class BinaryVariant:
    """One program file (or bundle directory) of a binary, for one platform or for all.

    ``path`` is absolute on the client and None in the wire form; ``digest`` and ``size`` are
    those of the file, or of the bundle's archive, once the client has computed them.
    """

    path: str | None
    bundle: bool
    entry: str | None
    digest: str | None = None
    size: int | None = None
    # Set by a client holding a signing key (see xwch.signing); None: unsigned.
    signature: ProgramSignature | None = None


@dataclass(frozen=True)
class Binary:
    """A program tasks run; ``variants`` maps platforms (or :data:`PLATFORM_ANY`) to files."""

    name: str
    variants: Mapping[str, BinaryVariant]

    def for_platform(self, platform: str) -> BinaryVariant | None:
        """The variant to run on ``platform``: its own, else the one for every platform."""
        return self.variants.get(platform) or self.variants.get(PLATFORM_ANY)


@dataclass(frozen=True)
class InputRef:
    """A file placed at ``local`` in the working directory: a ``files`` entry or an output."""

    local: str
    file: str | None = None
    task: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class Task:
    """One expanded task: ids, references and local names are final and checked."""

    id: str
    binary: str
    args: tuple[str, ...] = ()
    inputs: tuple[InputRef, ...] = ()
    outputs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cost: float = DEFAULT_COST
    retries: int = DEFAULT_RETRIES
    timeout: float | None = None
    # Ordering-only edges, as expanded task ids.
    after: tuple[str, ...] = ()
    # The directory (ending in /) the program keeps its checkpoint in, saved every
    # ``checkpoint_every`` seconds and restored for a relaunched attempt; None: none.
    checkpoint: str | None = None
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    # Results checked by replication (None: the first result is taken).
    replication: Replication | None = None

    def dependencies(self) -> set[str]:
        """The ids of the tasks this one waits for: those it reads from, and ``after``."""
        deps = {ref.task for ref in self.inputs if ref.task is not None}
        deps.update(self.after)
        return deps


@dataclass(frozen=True)
class FileEntry:
    """An input file of the job; ``path`` is absolute on the client, None in the wire form."""

    name: str
    path: str | None
    digest: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Job:
    """A checked, fully expanded job.

    ``tasks`` come in a topological order (the file's order wherever the edges allow it);
    ``results`` are the ``(task id, output)`` pairs the client downloads, globs expanded.
    """

    name: str
    priority: int
    binaries: Mapping[str, Binary]
    files: Mapping[str, FileEntry]
    tasks: tuple[Task, ...]
    results: tuple[tuple[str, str], ...]

    def client_paths(self) -> dict[str, bool]:
        """The absolute paths :meth:`with_digests` needs, each mapped to "is a bundle"."""
        paths = {v.path: v.bundle for b in self.binaries.values() for v in b.variants.values()}
        paths.update({f.path: False for f in self.files.values()})
        return {path: bundle for path, bundle in paths.items() if path is not None}

    def with_digests(self, digests: Mapping[str, tuple[str, int]]) -> Job:
        """This job with digests and sizes from ``digests`` (absolute client path -> pair).

        A bundle's key is its directory and its digest that of its archive. Paths missing from
        ``digests`` keep what they had, so :meth:`to_wire` reports them.
        """

        def stamp(
            path: str | None, digest: str | None, size: int | None
        ) -> tuple[str | None, int | None]:
            if path is None or path not in digests:
                return digest, size
            digest, size = digests[path]
            if not DIGEST_RE.fullmatch(digest) or type(size) is not int or size < 0:
                raise ValueError(f"bad digest or size for {path}: {digest!r}, {size!r}")
            return digest, size

        def stamp_variant(v: BinaryVariant) -> BinaryVariant:
            digest, size = stamp(v.path, v.digest, v.size)
            return replace(v, digest=digest, size=size)

        def stamp_file(f: FileEntry) -> FileEntry:
            digest, size = stamp(f.path, f.digest, f.size)
            return replace(f, digest=digest, size=size)

        binaries = {
            name: replace(b, variants={p: stamp_variant(v) for p, v in b.variants.items()})
            for name, b in self.binaries.items()
        }
        files = {name: stamp_file(f) for name, f in self.files.items()}
        return replace(self, binaries=binaries, files=files)

    def to_wire(self) -> dict[str, object]:
        """The JSON-able form sent to the coordinator; every digest must be set."""
        binaries: dict[str, object] = {}
        for name, binary in self.binaries.items():
            variants: dict[str, object] = {}
            for platform, v in binary.variants.items():
                if v.digest is None or v.size is None:
                    raise ValueError(f"binary {name!r} ({platform}) has no digest")
                form: dict[str, object] = {
                    "digest": v.digest,
                    "size": v.size,
                    "bundle": v.bundle,
                    "entry": v.entry,
                }
                if v.signature is not None:
                    form["signature"] = {
                        "key": v.signature.key,
                        "signature": v.signature.signature,
                    }
                variants[platform] = form
            binaries[name] = variants
        files: dict[str, object] = {}
        for name, f in self.files.items():
            if f.digest is None or f.size is None:
                raise ValueError(f"file {name!r} has no digest")
            files[name] = {"digest": f.digest, "size": f.size}
        return {
            "name": self.name,
            "priority": self.priority,
            "binaries": binaries,
            "files": files,
            "tasks": [_task_to_wire(t) for t in self.tasks],
            "results": [{"task": t, "output": o} for t, o in self.results],
        }


def _task_to_wire(task: Task) -> dict[str, object]:
    wire = _plain_task_to_wire(task)
    if task.replication is not None:
        wire.update(task.replication.to_wire())
    return wire


def _plain_task_to_wire(task: Task) -> dict[str, object]:
    inputs: list[dict[str, str | None]] = [
        {"local": i.local, "file": i.file}
        if i.file is not None
        else {"local": i.local, "task": i.task, "output": i.output}
        for i in task.inputs
    ]
    wire: dict[str, object] = {
        "id": task.id,
        "binary": task.binary,
        "args": list(task.args),
        "env": dict(task.env),
        "inputs": inputs,
        "outputs": list(task.outputs),
        "cost": _wire_number(task.cost),
        "retries": task.retries,
        "timeout": None if task.timeout is None else _wire_number(task.timeout),
        "after": list(task.after),
    }
    # Only when set: a job without checkpoints reads the same to a coordinator that predates them.
    if task.checkpoint is not None:
        wire["checkpoint"] = task.checkpoint
        wire["checkpoint_every"] = _wire_number(task.checkpoint_every)
    return wire


def _wire_number(number: float) -> int | float:
    # 50, as the user wrote it, rather than 50.0.
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


# -- The user's file ------------------------------------------------------------------------


def load_job_file(path: str | os.PathLike[str]) -> Job:
    """Read, decode and check the user's job file; paths are relative to its directory."""
    source = os.fspath(path)
    try:
        data = Path(source).read_bytes()
    except OSError as e:
        raise JobFileError(source, "", f"cannot read the job file: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobFileError(source, "", f"not UTF-8 text (bad byte at offset {e.start})") from None
    try:
        doc = json.loads(
            text, object_pairs_hook=json_object_from_pairs, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        problem = f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        raise JobFileError(source, "", problem) from None
    except ValueError as e:
        raise JobFileError(source, "", f"invalid JSON: {e}") from None
    except RecursionError:
        raise JobFileError(source, "", "invalid JSON: nested too deeply") from None
    return parse_job_document(doc, source=source, base_dir=Path(source).parent)


def _reject_constant(name: str) -> object:
    # Python's decoder accepts NaN and Infinity; JSON does not, and neither do we.
    raise ValueError(f"{name} is not a JSON value")


def parse_job_document(doc: object, *, source: str, base_dir: Path) -> Job:
    """Check an already-decoded job file; ``source`` names it in messages."""
    return _JobFileParser(source, base_dir).parse(doc)


class _JobFileParser:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.check = Checker(source)
        self.base_dir = os.path.abspath(base_dir)
        self.binaries: dict[str, Binary] = {}
        self.files: dict[str, FileEntry] = {}
        self.index = TaskIndex(())
        self.outputs_of: dict[str, tuple[str, ...]] = {}
        self.replication = ReplicationKeys()

    def parse(self, doc: object) -> Job:
        check = self.check
        if not isinstance(doc, dict):
            check.fail("", f"the job must be a JSON object, got {json_type(doc)}")
        top = check.record(
            doc,
            "",
            required=("name", "binaries", "tasks"),
            optional=("files", "results", "priority", *REPLICATION_KEYS),
        )
        name = check.name(top["name"], "name", "job name")
        priority = check.integer(
            top.get("priority", DEFAULT_PRIORITY), "priority", -INT32_MAX, INT32_MAX
        )
        self.binaries = self._binaries(top["binaries"])
        self.files = self._files(top.get("files", {}))
        self.replication = parse_keys(check, top, "", self.binaries)
        task_values = check.array(top["tasks"], "tasks")
        if not task_values:
            check.fail("tasks", "a job needs at least one task")
        templates = [
            parse_template(check, v, item_path("tasks", i), self.binaries)
            for i, v in enumerate(task_values)
        ]
        drafts = expand(check, templates)
        self.index = TaskIndex([d.id for d in drafts])
        self.outputs_of = {d.id: d.outputs for d in drafts}
        tasks = _ordered(check, [self._task(d) for d in drafts])
        check_job_keys_used(check, self.replication, tasks)
        if "results" in top:
            results = self._results(top["results"])
        else:
            results = _default_results(tasks)
        return Job(name, priority, self.binaries, self.files, tasks, results)

    # Binaries and files: client paths that must exist.

    def _binaries(self, value: object) -> dict[str, Binary]:
        binaries: dict[str, Binary] = {}
        for name, spec in self.check.mapping(value, "binaries").items():
            where = entry_path("binaries", name)
            self.check.name(name, where, "binary name")
            if isinstance(spec, dict) and "bundle" not in spec and "entry" not in spec:
                if not self.check.mapping(spec, where):
                    self.check.fail(where, "no platform: give a path, a bundle or platforms")
                variants: dict[str, BinaryVariant] = {}
                for platform, platform_spec in spec.items():
                    platform_path = entry_path(where, platform)
                    if not PLATFORM_RE.fullmatch(platform):
                        self.check.fail(
                            platform_path,
                            f"invalid platform {quote(platform)}: "
                            "expected <os>-<machine> in lower case, like linux-x86_64",
                        )
                    variants[platform] = self._variant(platform_spec, platform_path)
            else:
                variants = {PLATFORM_ANY: self._variant(spec, where)}
            binaries[name] = Binary(name, variants)
        return binaries

    def _variant(self, spec: object, where: str) -> BinaryVariant:
        if isinstance(spec, str):
            return BinaryVariant(self._existing(spec, where, bundle=False), False, None)
        if not isinstance(spec, dict):
            self.check.fail(
                where, f"expected a path, a bundle or an object of platforms, got {json_type(spec)}"
            )
        obj = self.check.record(spec, where, required=("bundle", "entry"))
        bundle_path = key_path(where, "bundle")
        directory = self._existing(
            self.check.string(obj["bundle"], bundle_path), bundle_path, bundle=True
        )
        entry_where = key_path(where, "entry")
        entry = self.check.string(obj["entry"], entry_where)
        self.check.local_name(entry, entry_where, "bundle entry")
        if not os.path.isfile(os.path.join(directory, entry)):
            self.check.fail(entry_where, f"no such file in the bundle: {entry}")
        return BinaryVariant(directory, True, entry)

    def _files(self, value: object) -> dict[str, FileEntry]:
        files: dict[str, FileEntry] = {}
        for name, written in self.check.mapping(value, "files").items():
            where = entry_path("files", name)
            self.check.name(name, where, "file name")
            path = self._existing(self.check.string(written, where), where, bundle=False)
            files[name] = FileEntry(name, path)
        return files

    def _existing(self, written: str, where: str, *, bundle: bool) -> str:
        """The absolute path of ``written``: a regular file, or a directory for a bundle."""
        if not written:
            self.check.fail(where, "empty path")
        path = os.path.abspath(os.path.join(self.base_dir, written))
        kind = "directory" if bundle else "file"
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            self.check.fail(where, f"no such {kind}: {written}")
        except OSError as e:
            self.check.fail(where, f"cannot access {written}: {e.strerror}")
        if bundle and not stat.S_ISDIR(mode):
            self.check.fail(where, f"not a directory: {written}")
        if not bundle and not stat.S_ISREG(mode):
            hint = ' (a directory is sent as {"bundle": ..., "entry": ...})'
            self.check.fail(
                where, f"not a regular file: {written}{hint if stat.S_ISDIR(mode) else ''}"
            )
        if not os.access(path, os.R_OK):
            self.check.fail(where, f"cannot read {written}: permission denied")
        return path

    # References, once every id is known.

    def _fail(self, draft: Draft, path: str, problem: str) -> NoReturn:
        self.check.fail(path, problem + draft.context())

    def _local(self, draft: Draft, name: str, path: str, what: str) -> None:
        problem = self.check.local_problem(name)
        if problem is not None:
            self._fail(draft, path, f"{what} {quote(name)} {problem}")

    def _task(self, draft: Draft) -> Task:
        t = draft.template
        inputs: list[InputRef] = []
        origins: list[str] = []
        for where, key, ref in draft.inputs:
            refs = self._resolve(draft, key, ref, where)
            inputs += refs
            origins += [where] * len(refs)

        def origin(i: int) -> str:
            k = i - len(inputs)
            return origins[i] if k < 0 else item_path(key_path(t.path, "outputs"), k)

        paths = [i.local for i in inputs] + list(draft.outputs)
        _check_placement(self.check, paths, origin, draft.context)
        _check_checkpoint(self.check, t.checkpoint, paths, origin, draft.context)
        return Task(
            id=draft.id,
            binary=t.binary,
            args=draft.args,
            inputs=tuple(inputs),
            outputs=draft.outputs,
            env=draft.env,
            cost=t.cost,
            retries=t.retries,
            timeout=t.timeout,
            after=self._after(draft),
            checkpoint=t.checkpoint,
            checkpoint_every=t.checkpoint_every,
            replication=resolve(self.check, self.replication, t.replication, draft.context),
        )

    def _resolve(self, draft: Draft, key: str, ref: str, where: str) -> list[InputRef]:
        """The files one input places: several for a glob into a directory."""
        directory = key.endswith("/")
        local = key[:-1] if directory else key
        self._local(draft, local, where, "input directory" if directory else "input name")
        if "/" not in ref:
            entry = self.files.get(ref)
            if entry is None or entry.path is None:
                self._fail(
                    draft, where, f"unknown file {quote(ref)} (a task output is TASK/OUTPUT)"
                )
            # Into a directory, a file goes under its own base name, as `cp file dir/` does.
            place = f"{local}/{os.path.basename(entry.path)}" if directory else local
            return [InputRef(place, file=ref)]
        task_part, _, output = ref.partition("/")
        if not task_part or not output:
            self._fail(
                draft, where, f"invalid reference {quote(ref)}: expected NAME or TASK/OUTPUT"
            )
        unknown = VARIABLE_RE.search(task_part)
        if unknown is not None:
            self._fail(draft, where, f"unknown variable {unknown.group(0)} in {quote(ref)}")
        if is_glob(task_part) and not directory:
            self._fail(
                draft,
                where,
                f"{quote(ref)} is a glob: its input name must end with / (a directory)",
            )
        matches = self.index.match(task_part)
        if not matches:
            self._fail(draft, where, _no_task(task_part))
        if draft.id in matches:
            self._fail(draft, where, f"task {quote(draft.id)} cannot read its own output")
        refs = []
        for task_id in matches:
            if output not in self.outputs_of[task_id]:
                self._fail(draft, where, f"task {quote(task_id)} has no output {quote(output)}")
            # Into a directory, each task's output gets its own folder, glob or not.
            place = f"{local}/{task_id}/{output}" if directory else local
            refs.append(InputRef(place, task=task_id, output=output))
        return refs

    def _after(self, draft: Draft) -> tuple[str, ...]:
        after: dict[str, None] = {}
        after_path = key_path(draft.template.path, "after")
        for i, pattern in enumerate(draft.after):
            where = item_path(after_path, i)
            unknown = VARIABLE_RE.search(pattern)
            if unknown is not None:
                self._fail(draft, where, f"unknown variable {unknown.group(0)} in {quote(pattern)}")
            matches = self.index.match(pattern)
            if not matches:
                self._fail(draft, where, _no_task(pattern))
            if draft.id in matches:
                self._fail(draft, where, f"task {quote(draft.id)} cannot wait for itself")
            after.update(dict.fromkeys(matches))
        return tuple(after)

    def _results(self, value: object) -> tuple[tuple[str, str], ...]:
        results: dict[tuple[str, str], None] = {}
        for i, ref in enumerate(self.check.strings(value, "results")):
            where = item_path("results", i)
            task_part, _, output = ref.partition("/")
            if not task_part or not output:
                self.check.fail(where, f"invalid result {quote(ref)}: expected TASK/OUTPUT")
            matches = self.index.match(task_part)
            if not matches:
                self.check.fail(where, _no_task(task_part))
            for task_id in matches:
                if output not in self.outputs_of[task_id]:
                    self.check.fail(where, f"task {quote(task_id)} has no output {quote(output)}")
                results[task_id, output] = None
        return tuple(results)


def _no_task(pattern: str) -> str:
    return f"no task matches {quote(pattern)}" if is_glob(pattern) else f"no task {quote(pattern)}"


# -- The wire form --------------------------------------------------------------------------

_WIRE_TASK_KEYS = (
    "id",
    "binary",
    "args",
    "env",
    "inputs",
    "outputs",
    "cost",
    "retries",
    "timeout",
    "after",
)
# Keys a client may leave out (older clients never send them).
_WIRE_TASK_OPTIONAL = ("checkpoint", "checkpoint_every")


def parse_wire_job(doc: object) -> Job:
    """Check a job received from a client, rule by rule as for the user's file."""
    check = Checker(WIRE_SOURCE)
    if not isinstance(doc, dict):
        check.fail("", f"the job must be a JSON object, got {json_type(doc)}")
    top = check.record(
        doc, "", required=("name", "priority", "binaries", "files", "tasks", "results")
    )
    name = check.name(top["name"], "name", "job name")
    priority = check.integer(top["priority"], "priority", -INT32_MAX, INT32_MAX)

    binaries: dict[str, Binary] = {}
    for binary_name, spec in check.mapping(top["binaries"], "binaries").items():
        where = entry_path("binaries", binary_name)
        check.name(binary_name, where, "binary name")
        variants: dict[str, BinaryVariant] = {}
        for platform, variant in check.mapping(spec, where).items():
            platform_path = entry_path(where, platform)
            if platform != PLATFORM_ANY and not PLATFORM_RE.fullmatch(platform):
                check.fail(platform_path, f"invalid platform {quote(platform)}")
            obj = check.record(
                variant,
                platform_path,
                required=("digest", "size", "bundle", "entry"),
                optional=("signature",),
            )
            digest, size = _wire_digest(check, obj, platform_path)
            bundle = obj["bundle"]
            if not isinstance(bundle, bool):
                check.fail(key_path(platform_path, "bundle"), "expected true or false")
            entry_where = key_path(platform_path, "entry")
            entry: str | None = None
            if bundle:
                entry = check.string(obj["entry"], entry_where)
                check.local_name(entry, entry_where, "bundle entry")
            elif obj["entry"] is not None:
                check.fail(entry_where, "must be null for a binary that is not a bundle")
            signature = None
            if "signature" in obj:
                signature = _wire_signature(
                    check,
                    obj["signature"],
                    key_path(platform_path, "signature"),
                    digest,
                    (binary_name, name),
                )
            variants[platform] = BinaryVariant(None, bundle, entry, digest, size, signature)
        if not variants:
            check.fail(where, "no platform")
        binaries[binary_name] = Binary(binary_name, variants)

    files: dict[str, FileEntry] = {}
    for file_name, spec in check.mapping(top["files"], "files").items():
        where = entry_path("files", file_name)
        check.name(file_name, where, "file name")
        digest, size = _wire_digest(check, check.record(spec, where, ("digest", "size")), where)
        files[file_name] = FileEntry(file_name, None, digest, size)

    task_values = check.array(top["tasks"], "tasks")
    if not task_values:
        check.fail("tasks", "a job needs at least one task")
    if len(task_values) > MAX_TASKS:
        check.fail("tasks", f"the job has more than {MAX_TASKS:,} tasks")
    tasks = [
        _wire_task(check, v, item_path("tasks", i), binaries, files)
        for i, v in enumerate(task_values)
    ]
    position: dict[str, int] = {}
    for i, task in enumerate(tasks):
        j = position.setdefault(task.id, i)
        if j != i:
            check.fail(
                key_path(item_path("tasks", i), "id"),
                f"duplicate task id {quote(task.id)} (also tasks[{j}])",
            )
    for i, task in enumerate(tasks):
        path = item_path("tasks", i)
        for k, ref in enumerate(task.inputs):
            if ref.task is not None:
                where = item_path(key_path(path, "inputs"), k)
                _wire_output(check, tasks, position, ref.task, ref.output, where)
        for k, other in enumerate(task.after):
            where = item_path(key_path(path, "after"), k)
            if other not in position:
                check.fail(where, f"no task {quote(other)}")
            if other == task.id:
                check.fail(where, f"task {quote(task.id)} cannot wait for itself")

    results: dict[tuple[str, str], None] = {}
    for i, value in enumerate(check.array(top["results"], "results")):
        where = item_path("results", i)
        obj = check.record(value, where, required=("task", "output"))
        task_id = check.string(obj["task"], key_path(where, "task"))
        output = check.string(obj["output"], key_path(where, "output"))
        _wire_output(check, tasks, position, task_id, output, where)
        results[task_id, output] = None
    return Job(name, priority, binaries, files, _ordered(check, tasks), tuple(results))


def _wire_digest(check: Checker, obj: Mapping[str, object], path: str) -> tuple[str, int]:
    digest_path = key_path(path, "digest")
    digest = check.string(obj["digest"], digest_path)
    if not DIGEST_RE.fullmatch(digest):
        check.fail(digest_path, f"invalid digest {quote(digest)}: expected 64 lowercase hex")
    return digest, check.integer(obj["size"], key_path(path, "size"), 0, SIZE_MAX)


def _wire_signature(
    check: Checker, value: object, path: str, digest: str, names: tuple[str, str]
) -> ProgramSignature:
    """A program's signature, checked here so that a forged, truncated or replayed one is
    refused with the job rather than by every worker that trusts its key."""
    obj = check.record(value, path, required=("key", "signature"))
    signed = ProgramSignature(
        check.string(obj["key"], key_path(path, "key")),
        check.string(obj["signature"], key_path(path, "signature")),
    )
    program, job = names
    try:
        verify_program(signed, digest, program, job)
    except SignatureError as e:
        check.fail(path, str(e))
    # One spelling of the key, so that workers' trusted keys compare equal to it.
    return ProgramSignature(normalized_key(signed.key), signed.signature)


def _wire_task(
    check: Checker,
    value: object,
    path: str,
    binaries: Mapping[str, Binary],
    files: Mapping[str, FileEntry],
) -> Task:
    # Paths are spelled inline here: this runs for up to a million tasks.
    obj = check.record(
        value, path, required=_WIRE_TASK_KEYS, optional=_WIRE_TASK_OPTIONAL + REPLICATION_KEYS
    )
    task_id = check.string(obj["id"], f"{path}.id")
    if not TASK_ID_RE.fullmatch(task_id):
        check.fail(f"{path}.id", f"invalid task id {quote(task_id)}: use {TASK_ID_RULE}")
    binary = check.string(obj["binary"], f"{path}.binary")
    if binary not in binaries:
        check.fail(f"{path}.binary", f"unknown binary {quote(binary)}")

    inputs: list[InputRef] = []
    for k, spec in enumerate(check.array(obj["inputs"], f"{path}.inputs")):
        where = f"{path}.inputs[{k}]"
        fields = check.record(spec, where, ("local",), ("file", "task", "output"))
        local = check.string(fields["local"], f"{where}.local")
        check.local_name(local, f"{where}.local", "input")
        if "file" in fields:
            if len(fields) != 2:
                check.fail(where, "an input is either a file or a task output, not both")
            file_name = check.string(fields["file"], f"{where}.file")
            if file_name not in files:
                check.fail(f"{where}.file", f"unknown file {quote(file_name)}")
            inputs.append(InputRef(local, file=file_name))
        else:
            if len(fields) != 3:
                check.fail(where, 'an input needs "file", or "task" and "output"')
            ref_task = check.string(fields["task"], f"{where}.task")
            output = check.string(fields["output"], f"{where}.output")
            inputs.append(InputRef(local, task=ref_task, output=output))

    outputs = tuple(check.strings(obj["outputs"], f"{path}.outputs"))
    for i, output in enumerate(outputs):
        check.local_name(output, f"{path}.outputs[{i}]", "output")

    def origin(i: int) -> str:
        k = i - len(inputs)
        return f"{path}.inputs[{i}].local" if k < 0 else f"{path}.outputs[{k}]"

    placed = [i.local for i in inputs] + list(outputs)
    _check_placement(check, placed, origin, str)
    checkpoint = None
    checkpoint_every = DEFAULT_CHECKPOINT_EVERY
    if "checkpoint" in obj:
        checkpoint = check.checkpoint(obj["checkpoint"], f"{path}.checkpoint")
        _check_checkpoint(check, checkpoint, placed, origin, str)
    if "checkpoint_every" in obj:
        checkpoint_every = check.checkpoint_every(
            obj["checkpoint_every"], f"{path}.checkpoint_every", checkpoint
        )
    timeout = obj["timeout"]
    return Task(
        id=task_id,
        binary=binary,
        args=tuple(check.strings(obj["args"], f"{path}.args")),
        inputs=tuple(inputs),
        outputs=outputs,
        env=check.env(obj["env"], f"{path}.env"),
        cost=check.positive(obj["cost"], f"{path}.cost"),
        retries=check.integer(obj["retries"], f"{path}.retries", 0, INT32_MAX),
        timeout=None if timeout is None else check.positive(timeout, f"{path}.timeout"),
        after=tuple(dict.fromkeys(check.strings(obj["after"], f"{path}.after"))),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        replication=from_wire(check, obj, path, binaries),
    )


def _wire_output(
    check: Checker,
    tasks: Sequence[Task],
    position: Mapping[str, int],
    task_id: str,
    output: str | None,
    where: str,
) -> None:
    if task_id not in position:
        check.fail(where, f"no task {quote(task_id)}")
    if output not in tasks[position[task_id]].outputs:
        check.fail(where, f"task {quote(task_id)} has no output {quote(str(output))}")


# -- Rules shared by both forms -------------------------------------------------------------


def _check_checkpoint(
    check: Checker,
    checkpoint: str | None,
    paths: Sequence[str],
    where: Callable[[int], str],
    context: Callable[[], str],
) -> None:
    """Reject an input or output placed in the checkpoint directory (a restored checkpoint
    replaces that directory whole)."""
    if checkpoint is None:
        return
    i = inside_checkpoint(checkpoint, paths)
    if i is not None:
        check.fail(
            where(i),
            f"{quote(paths[i])} is inside the checkpoint directory {quote(checkpoint)}" + context(),
        )


def _check_placement(
    check: Checker,
    paths: Sequence[str],
    where: Callable[[int], str],
    context: Callable[[], str],
) -> None:
    """Reject a task whose inputs and outputs overlap.

    ``where(i)`` is the JSON path of the ``i``-th path and ``context()`` ends the message: both
    are built only on failure, as this runs for every task.
    """
    clash = find_clash(paths)
    if clash is None:
        return
    i, j = clash
    if paths[i] == paths[j]:
        problem = f"{quote(paths[i])} is placed twice (also by {where(j)})"
    else:
        shorter = min(paths[i], paths[j], key=len)
        problem = (
            f"{quote(paths[i])} and {quote(paths[j])} (from {where(j)}) "
            f"would make {quote(shorter)} both a file and a directory"
        )
    check.fail(where(i), problem + context())


def _ordered(check: Checker, tasks: list[Task]) -> tuple[Task, ...]:
    """``tasks`` in a topological order, as close to the given order as the edges allow."""
    position = {task.id: i for i, task in enumerate(tasks)}
    order, cycle = topological_order([{position[d] for d in t.dependencies()} for t in tasks])
    if cycle:
        names = " -> ".join(tasks[i].id for i in [*cycle, cycle[0]])
        check.fail("tasks", f"cycle: {names}")
    return tuple(tasks[i] for i in order)


def _default_results(tasks: Sequence[Task]) -> tuple[tuple[str, str], ...]:
    """Every output of every task that no other task reads."""
    read = {(i.task, i.output) for t in tasks for i in t.inputs if i.task is not None}
    return tuple((t.id, o) for t in tasks for o in t.outputs if (t.id, o) not in read)
