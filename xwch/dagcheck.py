"""Checking primitives behind :mod:`xwch.dag`: JSON types and paths, names, local names, glob
lookup of task ids and the topological order.

Both front-ends of :mod:`xwch.dag` (the user's file, the wire form) use them, so the two agree on
every rule and every message.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections.abc import Collection, Sequence
from difflib import get_close_matches
from functools import lru_cache
from heapq import heappop, heappush
from typing import NoReturn, cast

from xwch.errors import JobFileError

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
NAME_RULE = "1-64 of A-Z a-z 0-9 . _ -"
TASK_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
TASK_ID_TEMPLATE_RE = re.compile(r"[A-Za-z0-9._{}-]{1,128}")
TASK_ID_RULE = "1-128 of A-Z a-z 0-9 . _ -"
PLATFORM_RE = re.compile(r"[a-z0-9]+-[a-z0-9_]+")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# A `{name}` placeholder; names follow the rule of binary and file names.
VARIABLE_RE = re.compile(r"\{([A-Za-z0-9._-]{1,64})\}")
DRIVE_RE = re.compile(r"[A-Za-z]:")

MAX_TASKS = 1_000_000
DEFAULT_COST = 1.0
DEFAULT_RETRIES = 3
DEFAULT_PRIORITY = 0
# Seconds between two saves of a task's checkpoint directory (docs/job-file.md).
DEFAULT_CHECKPOINT_EVERY = 60.0
# The store keeps priorities and retry counts in 32-bit columns and sizes in 64-bit ones.
INT32_MAX = 2**31 - 1
SIZE_MAX = 2**63 - 1
# NAME_MAX of every file system our workers run on.
COMPONENT_MAX_BYTES = 255


def quote(text: str) -> str:
    """``text`` as a JSON string, so odd characters in a message stay visible."""
    return json.dumps(text, ensure_ascii=False)


def key_path(path: str, key: str) -> str:
    """The JSON path of a fixed field: ``tasks[0].inputs``."""
    return f"{path}.{key}" if path else key


def entry_path(path: str, key: str) -> str:
    """The JSON path of a user-named entry: ``files["palette"]``."""
    return f"{path}[{quote(key)}]"


def item_path(path: str, index: int) -> str:
    """The JSON path of an array item: ``tasks[3]``."""
    return f"{path}[{index}]"


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class JsonObject(dict[str, object]):
    """A decoded JSON object that remembers keys it saw twice.

    The JSON decoder would keep the last value silently; :class:`Checker` reports the duplicate
    at the object's path instead, where the decoder could not say where it was.
    """

    duplicates: tuple[str, ...] = ()


def json_object_from_pairs(pairs: list[tuple[str, object]]) -> JsonObject:
    """``object_pairs_hook`` for :func:`json.loads` building :class:`JsonObject`."""
    obj = JsonObject(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicates: list[str] = []
        for key, _ in pairs:
            if key in seen:
                duplicates.append(key)
            seen.add(key)
        obj.duplicates = tuple(duplicates)
    return obj


class Checker:
    """Type and shape checks that raise :class:`JobFileError` naming ``source`` and a path."""

    __slots__ = ("_valid_env", "_valid_locals", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        # Expanded tasks repeat the same names: check each distinct one once.
        self._valid_locals: set[str] = set()
        self._valid_env: set[str] = set()

    def fail(self, path: str, problem: str) -> NoReturn:
        raise JobFileError(self.source, path, problem)

    def mapping(self, value: object, path: str) -> dict[str, object]:
        """An object whose keys the user chooses (``files``, ``inputs``, ``env`` ...)."""
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {json_type(value)}")
        duplicates = getattr(value, "duplicates", ())
        if duplicates:
            self.fail(path, f"duplicate key {quote(duplicates[0])}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
        return value

    def record(
        self, value: object, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, object]:
        """An object with fixed keys: unknown keys are errors (a typo must not be ignored)."""
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {json_type(value)}")
        must, may = _key_sets(required, optional)
        keys = value.keys()
        # The common case in one set comparison: tasks are checked up to a million times.
        if must <= keys <= may and not getattr(value, "duplicates", ()):
            return value
        obj = self.mapping(value, path)
        for key in obj:
            if key not in may:
                close = get_close_matches(key, [*required, *optional], n=1)
                hint = f" (did you mean {quote(close[0])}?)" if close else ""
                self.fail(path, f"unknown key {quote(key)}{hint}")
        missing = next(key for key in required if key not in obj)
        self.fail(path, f"missing key {quote(missing)}")

    def array(self, value: object, path: str) -> list[object]:
        if not isinstance(value, list):
            self.fail(path, f"expected an array, got {json_type(value)}")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {json_type(value)}")
        # No program argument, environment value or file name can hold a NUL byte.
        if "\0" in value:
            self.fail(path, "contains a NUL character")
        return value

    def strings(self, value: object, path: str) -> list[str]:
        items = self.array(value, path)
        for item in items:
            if type(item) is not str or "\0" in item:
                break
        else:
            return cast("list[str]", items)
        return [self.string(v, item_path(path, i)) for i, v in enumerate(items)]

    def name(self, value: object, path: str, what: str) -> str:
        """A job, binary or file name."""
        name = self.string(value, path)
        if not NAME_RE.fullmatch(name):
            self.fail(path, f"invalid {what} {quote(name)}: use {NAME_RULE}")
        return name

    def integer(self, value: object, path: str, minimum: int, maximum: int) -> int:
        # bool is an int in Python, but `true` is not a number in JSON.
        if type(value) is not int:
            self.fail(path, f"expected an integer, got {json_type(value)}")
        if not minimum <= value <= maximum:
            self.fail(path, f"{value} is out of range ({minimum} to {maximum})")
        return value

    def positive(self, value: object, path: str) -> float:
        """A positive finite number (cost, timeout)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a positive number, got {json_type(value)}")
        try:
            number = float(value)
        except OverflowError:
            self.fail(path, "number too large")
        if not math.isfinite(number) or number <= 0:
            self.fail(path, f"expected a positive number, got {value}")
        return number

    def env(self, value: object, path: str) -> dict[str, str]:
        """Extra environment variables; ``XWCH_`` names are the platform's."""
        env: dict[str, str] = {}
        for key, val in self.mapping(value, path).items():
            if type(val) is str and key in self._valid_env and "\0" not in val:
                env[key] = val
                continue
            where = entry_path(path, key)
            if not ENV_NAME_RE.fullmatch(key):
                self.fail(where, f"invalid variable name {quote(key)}: use A-Z a-z 0-9 _")
            if key.startswith("XWCH_"):
                self.fail(where, f"{key} is reserved: XWCH_ variables are set by the platform")
            env[key] = self.string(val, where)
            self._valid_env.add(key)
        return env

    def local_name(self, name: str, path: str, what: str) -> str:
        """``name`` if it is confined to the working directory."""
        problem = self.local_problem(name)
        if problem is not None:
            self.fail(path, f"{what} {quote(name)} {problem}")
        return name

    def checkpoint(self, value: object, path: str) -> str:
        """A task's checkpoint directory: a local name ending in ``/``."""
        name = self.string(value, path)
        if not name.endswith("/"):
            self.fail(path, f"checkpoint {quote(name)} must name a directory: end it with /")
        problem = self.local_problem(name[:-1])
        if problem is not None:
            self.fail(path, f"checkpoint {quote(name)} {problem}")
        return name

    def checkpoint_every(self, value: object, path: str, checkpoint: str | None) -> float:
        """How often a checkpoint is saved; only with a checkpoint directory."""
        if checkpoint is None:
            self.fail(path, 'checkpoint_every needs "checkpoint", the directory to save')
        return self.positive(value, path)

    def local_problem(self, name: str) -> str | None:
        """:func:`local_name_problem`, remembering the names found valid."""
        if name in self._valid_locals:
            return None
        problem = local_name_problem(name)
        if problem is None:
            self._valid_locals.add(name)
        return problem


@lru_cache(maxsize=64)
def _key_sets(
    required: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(required), frozenset(required + optional)


def local_name_problem(name: str) -> str | None:
    """Why ``name`` is not a path confined to a task's working directory, or None."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    # Workers may run Windows, where a backslash separates components and `C:x` leaves the
    # working directory.
    if "\\" in name:
        return "contains a backslash (separate directories with /)"
    if name.startswith("/"):
        return "is absolute (it must be relative to the working directory)"
    parts = name.split("/")
    if DRIVE_RE.match(parts[0]):
        return "starts with a drive letter (it must be relative to the working directory)"
    for part in parts:
        if not part:
            return "has an empty component"
        if part == "..":
            return "has a .. component (it would leave the working directory)"
        if part == ".":
            return "has a . component"
        if len(part.encode()) > COMPONENT_MAX_BYTES:
            return f"has a component longer than {COMPONENT_MAX_BYTES} bytes"
    return None


def inside_checkpoint(checkpoint: str, paths: Sequence[str]) -> int | None:
    """The index of the first of ``paths`` at or under the ``checkpoint`` directory, or None:
    a restored checkpoint replaces that directory whole, so no input or output may live there."""
    for i, path in enumerate(paths):
        if path == checkpoint[:-1] or path.startswith(checkpoint):
            return i
    return None


def find_clash(paths: Sequence[str]) -> tuple[int, int] | None:
    """Indices ``(i, j)``, ``j < i``, of two paths that cannot both be placed, or None.

    Two paths clash when they are equal, or when one is a directory of the other (``a`` and
    ``a/b``: ``a`` cannot be a file and a directory).
    """
    if len(paths) < 2:
        return None
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        j = first.setdefault(path, i)
        if j != i:
            return i, j
    for i, path in enumerate(paths):
        cut = path.rfind("/")
        while cut > 0:
            parent = first.get(path[:cut])
            if parent is not None:
                return max(i, parent), min(i, parent)
            cut = path.rfind("/", 0, cut)
    return None


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


class TaskIndex:
    """Looks task ids up by exact id or by glob (``*``, ``?``).

    A reduce task reading ``map-*/out`` next to 100,000 maps is the common case, and foreach
    may give every task its own pattern; so each distinct pattern is matched once, and only
    against the ids sharing its literal prefix (or suffix), found by bisection in sorted ids.
    """

    def __init__(self, ids: Sequence[str]) -> None:
        self.position = {task_id: i for i, task_id in enumerate(ids)}
        self._ids = ids
        self._sorted: list[str] | None = None
        self._sorted_reversed: list[str] | None = None
        self._matches: dict[str, tuple[str, ...]] = {}

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.position

    def match(self, pattern: str) -> tuple[str, ...]:
        """The ids matching ``pattern``, in the order given to the index."""
        if not is_glob(pattern):
            return (pattern,) if pattern in self.position else ()
        found = self._matches.get(pattern)
        if found is None:
            found = self._match(pattern)
            self._matches[pattern] = found
        return found

    def _match(self, pattern: str) -> tuple[str, ...]:
        wild = [i for i, c in enumerate(pattern) if c in "*?"]
        prefix, suffix = pattern[: wild[0]], pattern[wild[-1] + 1 :]
        regex = re.compile(
            "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        )
        candidates: Sequence[str]
        if not prefix and not suffix:
            candidates = self._ids
        elif len(prefix) >= len(suffix):
            if self._sorted is None:
                self._sorted = sorted(self._ids)
            candidates = _starting_with(self._sorted, prefix)
        else:
            if self._sorted_reversed is None:
                self._sorted_reversed = sorted(task_id[::-1] for task_id in self._ids)
            candidates = [r[::-1] for r in _starting_with(self._sorted_reversed, suffix[::-1])]
        matches = [task_id for task_id in candidates if regex.fullmatch(task_id)]
        if candidates is not self._ids:
            matches.sort(key=self.position.__getitem__)
        return tuple(matches)


def _starting_with(sorted_ids: list[str], prefix: str) -> list[str]:
    low = bisect_left(sorted_ids, prefix)
    high = bisect_left(sorted_ids, prefix + "\U0010ffff", low)
    return sorted_ids[low:high]


def topological_order(deps: Sequence[Collection[int]]) -> tuple[list[int], list[int]]:
    """Order nodes so that each follows its dependencies, keeping the given order where it can.

    ``deps[i]`` holds the distinct nodes node ``i`` waits for. Returns ``(order, [])``, or
    ``([], cycle)`` where ``cycle`` lists one cycle's nodes in data-flow order (each feeds the
    next, the last feeds the first), starting at its earliest node. Iterative throughout: a chain
    of a million tasks must not exhaust the stack.
    """
    count = len(deps)
    # Files are usually written producers first: then the given order is already the answer.
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return list(range(count)), []
    dependents: list[list[int]] = [[] for _ in range(count)]
    waiting = [len(ds) for ds in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            dependents[d].append(i)
    # Ascending, hence already a heap; popping the smallest ready node keeps the given order.
    ready = [i for i in range(count) if not waiting[i]]
    order: list[int] = []
    while ready:
        node = heappop(ready)
        order.append(node)
        for after in dependents[node]:
            waiting[after] -= 1
            if not waiting[after]:
                heappush(ready, after)
    if len(order) == count:
        return order, []
    # Every node left waits for another node left: walking such waits must come back on itself.
    node = next(i for i in range(count) if waiting[i])
    step: dict[int, int] = {}
    walk: list[int] = []
    while node not in step:
        step[node] = len(walk)
        walk.append(node)
        node = min(d for d in deps[node] if waiting[d])
    cycle = walk[step[node] :][::-1]
    start = cycle.index(min(cycle))
    return [], cycle[start:] + cycle[:start]
