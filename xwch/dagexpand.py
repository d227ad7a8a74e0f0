"""Task objects of the user's job file and their ``foreach`` expansion, for :mod:`xwch.dag`.

A task object is compiled once into a :class:`Template` (its strings split at their
``{variable}`` placeholders), counted, and only then expanded into :class:`Draft` tasks: a
foreach of a billion tasks fails at the count, before anything is built. References are left
to :mod:`xwch.dag`, which resolves them once every expanded id is known.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from xwch.dagcheck import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_COST,
    DEFAULT_RETRIES,
    INT32_MAX,
    MAX_TASKS,
    NAME_RE,
    NAME_RULE,
    SIZE_MAX,
    TASK_ID_RE,
    TASK_ID_RULE,
    TASK_ID_TEMPLATE_RE,
    VARIABLE_RE,
    Checker,
    entry_path,
    item_path,
    json_type,
    key_path,
    quote,
)
from xwch.dagreplication import KEYS as REPLICATION_KEYS
from xwch.dagreplication import ReplicationKeys, parse_keys

TASK_KEYS = (
    "id",
    "binary",
    "args",
    "inputs",
    "outputs",
    "env",
    "cost",
    "retries",
    "timeout",
    "after",
    "foreach",
    "checkpoint",
    "checkpoint_every",
    *REPLICATION_KEYS,
)

Values = Sequence[str] | range


class Text:
    """A string of a task with ``{variable}`` placeholders, compiled once per task object.

    Only the task's own foreach variables are placeholders: other braces stay as written, since
    an argument like ``{}`` may mean something to the program.
    """

    __slots__ = ("_format", "plain", "unknown", "used")

    def __init__(self, text: str, slots: Mapping[str, int]) -> None:
        pieces = VARIABLE_RE.split(text)
        fmt: list[str] = []
        unknown: list[str] = []
        used: set[int] = set()
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                fmt.append(piece.replace("{", "{{").replace("}", "}}"))
            elif piece in slots:
                used.add(slots[piece])
                fmt.append(f"{{{slots[piece]}}}")
            else:
                unknown.append(piece)
                fmt.append(f"{{{{{piece}}}}}")
        # str.format does the substitution in C: it matters at 100,000 tasks.
        self._format = "".join(fmt)
        self.plain = None if used else text
        self.unknown = tuple(unknown)
        self.used = frozenset(used)

    def render(self, values: Sequence[str]) -> str:
        return self.plain if self.plain is not None else self._format.format(*values)


class Texts:
    """The strings of one list (``args``, ``outputs`` ...), rendered together."""

    __slots__ = ("constant", "items")

    def __init__(self, items: Sequence[Text]) -> None:
        self.items = tuple(items)
        plain = [t.plain for t in self.items if t.plain is not None]
        # Without placeholders, every expanded task shares one tuple.
        self.constant = tuple(plain) if len(plain) == len(self.items) else None

    def render(self, values: Sequence[str]) -> tuple[str, ...]:
        if self.constant is not None:
            return self.constant
        return tuple([t.render(values) for t in self.items])


@dataclass(slots=True)
class Template:
    """One task object of the file, however many tasks its ``foreach`` makes."""

    path: str
    variables: tuple[str, ...]
    values: tuple[Values, ...]
    count: int
    id: Text
    binary: str
    args: Texts
    inputs: tuple[tuple[str, Text, Text], ...]  # (JSON path, key, reference)
    outputs: Texts
    env: tuple[tuple[str, Text], ...]
    cost: float
    retries: int
    timeout: float | None
    after: Texts
    checkpoint: str | None
    checkpoint_every: float
    replication: ReplicationKeys


@dataclass(slots=True)
class Draft:
    """One expanded task before its references are resolved."""

    template: Template
    id: str
    args: tuple[str, ...]
    inputs: list[tuple[str, str, str]]  # (JSON path, key, reference)
    outputs: tuple[str, ...]
    env: dict[str, str]
    after: list[str]

    def context(self) -> str:
        """For messages: a foreach task's JSON path points at its task object, so say which
        expansion is wrong."""
        return f" (in task {quote(self.id)})" if self.template.variables else ""


def parse_template(check: Checker, value: object, path: str, binaries: Collection[str]) -> Template:
    """Check the task object at ``path`` and compile its strings."""
    obj = check.record(value, path, required=("id", "binary"), optional=TASK_KEYS)
    variables: tuple[str, ...] = ()
    values: tuple[Values, ...] = ()
    if "foreach" in obj:
        variables, values = _foreach(check, obj["foreach"], key_path(path, "foreach"))
    slots = {name: k for k, name in enumerate(variables)}

    id_path = key_path(path, "id")
    raw_id = check.string(obj["id"], id_path)
    if not TASK_ID_TEMPLATE_RE.fullmatch(raw_id):
        check.fail(id_path, f"invalid task id {quote(raw_id)}: use {TASK_ID_RULE} {{}}")
    task_id = Text(raw_id, slots)
    if task_id.unknown:
        known = f"foreach has {', '.join(variables)}" if variables else "the task has no foreach"
        check.fail(id_path, f"unknown variable {{{task_id.unknown[0]}}} ({known})")
    for k, variable in enumerate(variables):
        if k not in task_id.used and _count(values[k]) > 1:
            check.fail(
                entry_path(key_path(path, "foreach"), variable),
                f"variable {variable} is not used in the id, so expanded ids would repeat",
            )

    binary_path = key_path(path, "binary")
    binary = check.string(obj["binary"], binary_path)
    if binary not in binaries:
        check.fail(binary_path, f"unknown binary {quote(binary)}")

    def texts(key: str) -> Texts:
        return Texts([Text(s, slots) for s in check.strings(obj.get(key, []), key_path(path, key))])

    inputs_path = key_path(path, "inputs")
    inputs = []
    for key, ref in check.mapping(obj.get("inputs", {}), inputs_path).items():
        where = entry_path(inputs_path, key)
        inputs.append((where, Text(key, slots), Text(check.string(ref, where), slots)))
    env = check.env(obj.get("env", {}), key_path(path, "env"))
    timeout = obj.get("timeout")  # null is taken as "no timeout", as in the wire form
    checkpoint = None
    if "checkpoint" in obj:
        checkpoint = check.checkpoint(obj["checkpoint"], key_path(path, "checkpoint"))
    checkpoint_every = DEFAULT_CHECKPOINT_EVERY
    if "checkpoint_every" in obj:
        checkpoint_every = check.checkpoint_every(
            obj["checkpoint_every"], key_path(path, "checkpoint_every"), checkpoint
        )
    return Template(
        path=path,
        variables=variables,
        values=values,
        count=math.prod(_count(v) for v in values),
        id=task_id,
        binary=binary,
        args=texts("args"),
        inputs=tuple(inputs),
        outputs=texts("outputs"),
        env=tuple((k, Text(v, slots)) for k, v in env.items()),
        cost=check.positive(obj.get("cost", DEFAULT_COST), key_path(path, "cost")),
        retries=check.integer(
            obj.get("retries", DEFAULT_RETRIES), key_path(path, "retries"), 0, INT32_MAX
        ),
        timeout=None if timeout is None else check.positive(timeout, key_path(path, "timeout")),
        after=texts("after"),
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        replication=parse_keys(check, obj, path, binaries),
    )


def _count(values: Values) -> int:
    # len() of a range fails beyond sys.maxsize; the count must not.
    return values.stop - values.start if isinstance(values, range) else len(values)


def _foreach(
    check: Checker, value: object, path: str
) -> tuple[tuple[str, ...], tuple[Values, ...]]:
    variables: list[str] = []
    values: list[Values] = []
    for variable, spec in check.mapping(value, path).items():
        where = entry_path(path, variable)
        if not NAME_RE.fullmatch(variable):
            check.fail(where, f"invalid variable name {quote(variable)}: use {NAME_RULE}")
        variables.append(variable)
        if isinstance(spec, list):
            # An empty list would silently drop the task.
            if not spec:
                check.fail(where, "no values")
            values.append(tuple(_value(check, v, item_path(where, i)) for i, v in enumerate(spec)))
            continue
        if not isinstance(spec, dict):
            check.fail(
                where, f'expected an array or {{"range": [start, stop]}}, got {json_type(spec)}'
            )
        range_path = key_path(where, "range")
        bounds = check.array(check.record(spec, where, required=("range",))["range"], range_path)
        if len(bounds) != 2:
            check.fail(range_path, "expected [start, stop]")
        start, stop = (
            check.integer(b, item_path(range_path, i), -SIZE_MAX, SIZE_MAX)
            for i, b in enumerate(bounds)
        )
        if stop <= start:
            check.fail(range_path, f"empty range: stop ({stop}) must exceed start ({start})")
        # Kept lazy: the task count is checked before any value is rendered.
        values.append(range(start, stop))
    return tuple(variables), tuple(values)


def _value(check: Checker, value: object, path: str) -> str:
    if isinstance(value, str):
        return check.string(value, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        check.fail(path, f"expected a string or a number, got {json_type(value)}")
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        check.fail(path, f"expected a finite number, got {value}")
    # As JavaScript prints numbers: 3.0 is "3".
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def expand(check: Checker, templates: Sequence[Template]) -> list[Draft]:
    """Every task of the job in file order, each foreach's last variable varying fastest.

    Checks ids (valid, unique) and output names.
    """
    total = 0
    for t in templates:
        if t.count > MAX_TASKS:
            check.fail(
                key_path(t.path, "foreach"),
                f"expands to {t.count:,} tasks, more than the limit of {MAX_TASKS:,}",
            )
        total += t.count
        if total > MAX_TASKS:
            check.fail("tasks", f"the job has more than {MAX_TASKS:,} tasks")
    drafts: list[Draft] = []
    made_by: dict[str, str] = {}
    for t in templates:
        id_path = key_path(t.path, "id")
        outputs_path = key_path(t.path, "outputs")
        columns = [[str(v) for v in vs] if isinstance(vs, range) else vs for vs in t.values]
        for combo in itertools.product(*columns):
            task_id = t.id.render(combo)
            if not TASK_ID_RE.fullmatch(task_id):
                what = "expanded id" if t.variables else "task id"
                check.fail(id_path, f"{what} {quote(task_id)} is invalid: use {TASK_ID_RULE}")
            other = made_by.get(task_id)
            if other is not None:
                check.fail(id_path, f"duplicate task id {quote(task_id)} (also made by {other})")
            made_by[task_id] = t.path
            draft = Draft(
                template=t,
                id=task_id,
                args=t.args.render(combo),
                inputs=[(w, k.render(combo), r.render(combo)) for w, k, r in t.inputs],
                outputs=t.outputs.render(combo),
                env={k: v.render(combo) for k, v in t.env},
                after=list(t.after.render(combo)),
            )
            for i, output in enumerate(draft.outputs):
                problem = check.local_problem(output)
                if problem is not None:
                    check.fail(
                        item_path(outputs_path, i),
                        f"output {quote(output)} {problem}{draft.context()}",
                    )
            drafts.append(draft)
    return drafts
