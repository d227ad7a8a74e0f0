"""The job file: loading, expansion, every rule of docs/job-file.md, and the wire form."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from xwch.dag import (
    MAX_TASKS,
    PLATFORM_ANY,
    Binary,
    BinaryVariant,
    InputRef,
    Job,
    Task,
    load_job_file,
    parse_job_document,
    parse_wire_job,
)
from xwch.errors import JobFileError

# The second example of docs/job-file.md.
SPEC_EXAMPLE = {
    "name": "mandelbrot",
    "binaries": {
        "render": "build/mandel",
        "merge": {"linux-x86_64": "build/merge-x86_64", "linux-aarch64": "build/merge-aarch64"},
    },
    "files": {"palette": "data/palette.txt"},
    "tasks": [
        {
            "id": "tile-{i}",
            "foreach": {"i": {"range": [0, 16]}},
            "binary": "render",
            "args": ["--tile", "{i}", "--of", "16", "tile.pgm"],
            "inputs": {"palette.txt": "palette"},
            "outputs": ["tile.pgm"],
            "cost": 50,
        },
        {
            "id": "image",
            "binary": "merge",
            "args": ["tiles", "image.pgm"],
            "inputs": {"tiles/": "tile-*/tile.pgm"},
            "outputs": ["image.pgm"],
        },
    ],
}
PROJECT_FILES = (
    "build/mandel",
    "build/merge-x86_64",
    "build/merge-aarch64",
    "data/palette.txt",
    "bin/prog",
    "bundle/run.sh",
    "bundle/lib/helper.py",
)
DIGEST = "0123456789abcdef" * 4


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A job directory with the programs and data the documents below name, as the cwd."""
    for name in PROJECT_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def task(task_id: str = "t", **fields: Any) -> dict[str, Any]:
    return {"id": task_id, "binary": "prog", **fields}


def doc(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "job",
        "binaries": {"prog": "bin/prog"},
        "files": {"palette": "data/palette.txt"},
        "tasks": list(tasks) or [task()],
    }
    document.update(top)
    return document


def load(document: dict[str, Any] | str) -> Job:
    text = document if isinstance(document, str) else json.dumps(document)
    Path("dag.json").write_text(text)
    return load_job_file("dag.json")


def rejected(document: dict[str, Any] | str, path: str, problem: str) -> JobFileError:
    """Load ``document`` as dag.json and check the message names the file, path and problem."""
    with pytest.raises(JobFileError) as info:
        load(document)
    error = info.value
    assert (error.source, error.path) == ("dag.json", path), str(error)
    assert problem in error.problem, str(error)
    assert str(error) == (f"dag.json: {path}: " if path else "dag.json: ") + error.problem
    return error


def wire(job: Job) -> dict[str, Any]:
    """The wire form of ``job``, every client path given the same fake digest."""
    paths = job.client_paths()
    return job.with_digests({p: (DIGEST, 1) for p in paths}).to_wire()


def wire_rejected(document: object, path: str, problem: str) -> None:
    with pytest.raises(JobFileError) as info:
        parse_wire_job(document)
    assert (info.value.source, info.value.path) == ("<job>", path), str(info.value)
    assert problem in info.value.problem, str(info.value)


# -- Loading and expansion ------------------------------------------------------------------


def test_spec_example_expands_to_tiles_and_image(project: Path) -> None:
    """docs/job-file.md's example runs 16 tiles, then one merge reading every tile from tiles/."""
    job = load(SPEC_EXAMPLE)
    assert [t.id for t in job.tasks] == [f"tile-{i}" for i in range(16)] + ["image"]
    tile3 = job.tasks[3]
    assert tile3.args == ("--tile", "3", "--of", "16", "tile.pgm")
    assert tile3.inputs == (InputRef("palette.txt", file="palette"),)
    assert (tile3.cost, tile3.retries, tile3.timeout) == (50, 3, None)
    image = job.tasks[-1]
    assert image.inputs == tuple(
        InputRef(f"tiles/tile-{i}/tile.pgm", task=f"tile-{i}", output="tile.pgm") for i in range(16)
    )
    assert image.dependencies() == {f"tile-{i}" for i in range(16)}
    assert job.results == (("image", "image.pgm"),)
    assert job.files["palette"].path == str(project / "data/palette.txt")
    assert job.binaries["render"].variants[PLATFORM_ANY].path == str(project / "build/mandel")


def test_paths_are_relative_to_the_job_file(
    project: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths in the file are found next to the file, wherever the client runs."""
    (project / "dag.json").write_text(json.dumps(SPEC_EXAMPLE))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    job = load_job_file(project / "dag.json")
    assert job.files["palette"].path == str(project / "data/palette.txt")


def test_parse_job_document_takes_decoded_json(project: Path) -> None:
    """A front-end holding the decoded file gets the same job, its messages under its name."""
    job = parse_job_document(SPEC_EXAMPLE, source="web", base_dir=project)
    assert len(job.tasks) == 17
    with pytest.raises(JobFileError, match=r"^web: name: "):
        parse_job_document({**SPEC_EXAMPLE, "name": ""}, source="web", base_dir=project)


def test_foreach_two_variables_make_the_product(project: Path) -> None:
    """Two foreach variables make one task per combination, the last varying fastest."""
    job = load(
        doc(task("r-{x}-{y}", foreach={"x": ["a", "b"], "y": {"range": [1, 4]}}, args=["{x}{y}"]))
    )
    assert [t.id for t in job.tasks] == ["r-a-1", "r-a-2", "r-a-3", "r-b-1", "r-b-2", "r-b-3"]
    assert job.tasks[4].args == ("b2",)


def test_foreach_numbers_render_as_json_does(project: Path) -> None:
    """Numeric foreach values appear as written in JSON: 3 not 3.0."""
    job = load(doc(task("v-{n}", foreach={"n": [3, 2.5, 4.0, -1]}, args=["{n}"])))
    assert [t.args[0] for t in job.tasks] == ["3", "2.5", "4", "-1"]


def test_foreach_substitutes_in_every_field(project: Path) -> None:
    """{variable} is replaced in id, args, inputs, outputs, env values and after."""
    job = load(
        doc(
            task("prep-{i}", foreach={"i": [0, 1]}, outputs=["p{i}.txt"]),
            task(
                "run-{i}",
                foreach={"i": [0, 1]},
                args=["--part={i}", "{}", "{other}"],
                inputs={"in-{i}.txt": "prep-{i}/p{i}.txt", "cfg-{i}": "palette"},
                outputs=["out-{i}.txt"],
                env={"PART": "{i}"},
                after=["prep-{i}"],
            ),
        )
    )
    run1 = job.tasks[3]
    assert run1.id == "run-1"
    # Braces that are not a foreach variable are the program's business.
    assert run1.args == ("--part=1", "{}", "{other}")
    assert run1.inputs == (
        InputRef("in-1.txt", task="prep-1", output="p1.txt"),
        InputRef("cfg-1", file="palette"),
    )
    assert (run1.outputs, run1.env, run1.after) == (("out-1.txt",), {"PART": "1"}, ("prep-1",))


def test_defaults(project: Path) -> None:
    """Omitted fields take the documented defaults: cost 1, 3 retries, no timeout, priority 0."""
    job = load(doc(task()))
    t = job.tasks[0]
    assert (job.priority, t.args, t.inputs, t.outputs, t.env) == (0, (), (), (), {})
    assert (t.cost, t.retries, t.timeout, t.after) == (1.0, 3, None, ())


def test_explicit_settings(project: Path) -> None:
    """Cost, retries, timeout and priority are kept as given."""
    job = load(doc(task(cost=2.5, retries=0, timeout=60), priority=-5))
    assert (job.priority, job.tasks[0].cost, job.tasks[0].retries) == (-5, 2.5, 0)
    assert job.tasks[0].timeout == 60


def test_tasks_come_in_topological_order_keeping_file_order(project: Path) -> None:
    """A consumer written before its producer still runs after it; others keep file order."""
    job = load(
        doc(
            task("sum", inputs={"a": "make/a.txt"}),
            task("other"),
            task("make", outputs=["a.txt"]),
        )
    )
    assert [t.id for t in job.tasks] == ["other", "make", "sum"]


def test_directory_input_with_plain_task_reference(project: Path) -> None:
    """A directory input reading one task places its output under <dir>/<task>/."""
    job = load(doc(task("a", outputs=["o.txt"]), task("b", inputs={"in/": "a/o.txt"})))
    assert job.tasks[1].inputs == (InputRef("in/a/o.txt", task="a", output="o.txt"),)


def test_directory_input_with_file_reference(project: Path) -> None:
    """A file given to a directory input keeps its own base name inside it."""
    job = load(doc(task(inputs={"cfg/": "palette"})))
    assert job.tasks[0].inputs == (InputRef("cfg/palette.txt", file="palette"),)


def test_results_default_to_outputs_nobody_reads(project: Path) -> None:
    """Without results, the client downloads every output no other task reads."""
    job = load(
        doc(
            task("a", outputs=["x", "log"]),
            task("b", inputs={"x": "a/x"}, outputs=["y"]),
        )
    )
    assert job.results == (("a", "log"), ("b", "y"))


def test_results_with_globs(project: Path) -> None:
    """Results may name many tasks with a glob, each output once."""
    job = load(
        doc(
            task("t-{i}", foreach={"i": [1, 2, 3]}, outputs=["o"]),
            task("u", outputs=["o"]),
            results=["t-*/o", "t-2/o", "u/o"],
        )
    )
    assert job.results == (("t-1", "o"), ("t-2", "o"), ("t-3", "o"), ("u", "o"))


def test_after_with_globs(project: Path) -> None:
    """after orders a task behind every matching task without moving data."""
    job = load(
        doc(
            task("final", after=["step-?", "setup"]),
            task("setup"),
            task("step-{i}", foreach={"i": [1, 2]}),
        )
    )
    final = next(t for t in job.tasks if t.id == "final")
    assert final.after == ("step-1", "step-2", "setup")
    assert final.inputs == ()
    assert [t.id for t in job.tasks][-1] == "final"


def test_bundle_binary(project: Path) -> None:
    """A bundle sends a whole directory and runs its entry."""
    job = load(doc(binaries={"prog": {"bundle": "bundle/", "entry": "run.sh"}}))
    variant = job.binaries["prog"].variants[PLATFORM_ANY]
    assert variant == BinaryVariant(str(project / "bundle"), bundle=True, entry="run.sh")
    assert job.client_paths() == {
        str(project / "bundle"): True,
        str(project / "data/palette.txt"): False,
    }


def test_per_platform_binaries(project: Path) -> None:
    """A binary given per platform offers each worker its own program, and no other."""
    job = load(
        doc(
            binaries={
                "prog": {
                    "linux-x86_64": "bin/prog",
                    "linux-aarch64": {"bundle": "bundle", "entry": "lib/helper.py"},
                }
            }
        )
    )
    prog = job.binaries["prog"]
    assert prog.for_platform("linux-x86_64") == BinaryVariant(
        str(project / "bin/prog"), False, None
    )
    aarch64 = prog.for_platform("linux-aarch64")
    assert aarch64 is not None and aarch64.bundle and aarch64.entry == "lib/helper.py"
    assert prog.for_platform("darwin-arm64") is None


def test_for_platform_falls_back_to_any() -> None:
    """A binary for every platform serves a platform it has no own variant for."""
    generic, special = BinaryVariant("/g", False, None), BinaryVariant("/s", False, None)
    binary = Binary("b", {PLATFORM_ANY: generic, "linux-x86_64": special})
    assert binary.for_platform("linux-x86_64") is special
    assert binary.for_platform("windows-amd64") is generic


def test_task_dependencies_join_data_edges_and_after() -> None:
    """A task waits for the tasks it reads from and those in after."""
    inputs = (InputRef("x", task="a", output="o"), InputRef("y", file="f"))
    assert Task("t", "b", inputs=inputs, after=("c",)).dependencies() == {"a", "c"}


def test_hundred_thousand_map_tasks_and_a_glob_reduce_load(project: Path) -> None:
    """A 100,000-task map and a reduce reading map-*/out.txt load, the glob matching every map
    task (how long it takes: bench/scheduler.py submit)."""
    job = load(
        doc(
            task("map-{i}", foreach={"i": {"range": [0, 100_000]}}, outputs=["out.txt"]),
            task("reduce", inputs={"parts/": "map-*/out.txt"}, outputs=["total"]),
        )
    )
    assert len(job.tasks[-1].inputs) == 100_000
    assert job.tasks[-1].inputs[-1].local == "parts/map-99999/out.txt"


def test_long_chain_does_not_exhaust_the_stack() -> None:
    """A long chain given consumers first is ordered without recursion."""
    n = 20_000
    tasks = [_wire_task(f"s{i}", inputs=[_from(f"s{i - 1}")] if i else []) for i in range(n)]
    job = parse_wire_job(_wire_doc(tasks[::-1]))
    assert [t.id for t in job.tasks] == [f"s{i}" for i in range(n)]


# -- Invalid files: one test per rule --------------------------------------------------------


def test_invalid_json_names_line_and_column(project: Path) -> None:
    """Broken JSON is reported with its line and column."""
    rejected('{\n  "name": "x",\n  "tasks": [}\n', "", "invalid JSON at line 3, column 13")


def test_nan_is_not_json(project: Path) -> None:
    """NaN, which Python would accept, is not JSON."""
    rejected('{"name": NaN}', "", "NaN is not a JSON value")


def test_unreadable_job_file(project: Path) -> None:
    """A missing job file is named in the message."""
    with pytest.raises(JobFileError, match=r"^missing\.json: cannot read the job file"):
        load_job_file("missing.json")


def test_duplicate_key(project: Path) -> None:
    """A key given twice is an error rather than a silent choice of one value."""
    text = json.dumps(doc(task(cost=1))).replace('"cost": 1', '"cost": 1, "cost": 2')
    rejected(text, "tasks[0]", 'duplicate key "cost"')


def test_job_must_be_an_object(project: Path) -> None:
    """A job file holding something else than an object says so."""
    rejected("[]", "", "the job must be a JSON object, got an array")


def test_unknown_top_level_key(project: Path) -> None:
    """A misspelt top-level key is reported, with the likely intended key."""
    rejected(doc(result=[]), "", 'unknown key "result" (did you mean "results"?)')


def test_unknown_task_key(project: Path) -> None:
    """A misspelt task key is reported at the task."""
    rejected(
        doc(task(outptus=["x"])), "tasks[0]", 'unknown key "outptus" (did you mean "outputs"?)'
    )


def test_missing_required_keys(project: Path) -> None:
    """name, binaries and tasks are required, and every task's id and binary."""
    rejected({"binaries": {}, "tasks": []}, "", 'missing key "name"')
    rejected(doc({"id": "t"}), "tasks[0]", 'missing key "binary"')


def test_at_least_one_task(project: Path) -> None:
    """A job without tasks is rejected."""
    rejected(doc() | {"tasks": []}, "tasks", "at least one task")


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "é"])
def test_invalid_job_name(project: Path, name: str) -> None:
    """The job name is 1-64 of A-Z a-z 0-9 . _ -."""
    rejected(doc(name=name), "name", "invalid job name")


def test_invalid_binary_and_file_names(project: Path) -> None:
    """Binary and file names follow the same rule as the job name."""
    rejected(doc(binaries={"my prog": "bin/prog"}), 'binaries["my prog"]', "invalid binary name")
    rejected(doc(files={"a/b": "data/palette.txt"}), 'files["a/b"]', "invalid file name")


@pytest.mark.parametrize(
    ("fields", "path", "problem"),
    [
        ({"cost": True}, "tasks[0].cost", "expected a positive number, got a boolean"),
        ({"cost": "5"}, "tasks[0].cost", "expected a positive number, got a string"),
        ({"retries": True}, "tasks[0].retries", "expected an integer, got a boolean"),
        ({"retries": 1.0}, "tasks[0].retries", "expected an integer, got a number"),
        ({"timeout": False}, "tasks[0].timeout", "expected a positive number, got a boolean"),
        ({"args": "--x"}, "tasks[0].args", "expected an array, got a string"),
        ({"args": ["a", 1]}, "tasks[0].args[1]", "expected a string, got a number"),
        ({"outputs": [None]}, "tasks[0].outputs[0]", "expected a string, got null"),
        ({"inputs": ["a"]}, "tasks[0].inputs", "expected an object, got an array"),
        ({"inputs": {"a": 1}}, 'tasks[0].inputs["a"]', "expected a string, got a number"),
        ({"env": {"A": 1}}, 'tasks[0].env["A"]', "expected a string, got a number"),
        ({"after": "x"}, "tasks[0].after", "expected an array, got a string"),
        ({"id": 7}, "tasks[0].id", "expected a string, got a number"),
        ({"args": ["a\u0000b"]}, "tasks[0].args[0]", "NUL character"),
    ],
)
def test_field_types(project: Path, fields: dict[str, Any], path: str, problem: str) -> None:
    """Each field has its JSON type; true is not a number."""
    rejected(doc(task(**fields)), path, problem)


def test_priority_must_be_an_integer(project: Path) -> None:
    """priority is an integer, and true is not one."""
    rejected(doc(priority=True), "priority", "expected an integer, got a boolean")
    rejected(doc(priority=2**40), "priority", "out of range")


@pytest.mark.parametrize("cost", [0, -1, -0.5])
def test_cost_must_be_positive(project: Path, cost: float) -> None:
    """A task's cost is a positive number."""
    rejected(doc(task(cost=cost)), "tasks[0].cost", "expected a positive number")


def test_retries_must_not_be_negative(project: Path) -> None:
    """retries is an integer >= 0."""
    rejected(doc(task(retries=-1)), "tasks[0].retries", "out of range")


def test_timeout_must_be_positive(project: Path) -> None:
    """A timeout is a positive number of seconds."""
    rejected(doc(task(timeout=0)), "tasks[0].timeout", "expected a positive number, got 0")


@pytest.mark.parametrize(
    ("env", "path", "problem"),
    [
        ({"1A": "x"}, 'tasks[0].env["1A"]', "invalid variable name"),
        ({"A-B": "x"}, 'tasks[0].env["A-B"]', "invalid variable name"),
        ({"XWCH_TASK": "x"}, 'tasks[0].env["XWCH_TASK"]', "reserved"),
    ],
)
def test_env_names(project: Path, env: dict[str, str], path: str, problem: str) -> None:
    """Environment names are valid identifiers and XWCH_ ones belong to the platform."""
    rejected(doc(task(env=env)), path, problem)


def test_unknown_binary(project: Path) -> None:
    """A task naming a binary the job does not declare is rejected."""
    rejected(doc(task(binary="nope")), "tasks[0].binary", 'unknown binary "nope"')


def test_unknown_file_reference(project: Path) -> None:
    """An input naming a missing files entry is rejected."""
    rejected(doc(task(inputs={"a": "palete"})), 'tasks[0].inputs["a"]', 'unknown file "palete"')


def test_unknown_task_reference(project: Path) -> None:
    """An input reading a task that does not exist is rejected."""
    rejected(doc(task(inputs={"a": "ghost/out"})), 'tasks[0].inputs["a"]', 'no task "ghost"')


def test_undeclared_output_reference(project: Path) -> None:
    """An input reading an output its task does not declare is rejected."""
    rejected(
        doc(task("a", outputs=["x"]), task("b", inputs={"y": "a/y"})),
        'tasks[1].inputs["y"]',
        'task "a" has no output "y"',
    )


def test_glob_reference_needs_a_directory(project: Path) -> None:
    """A glob reference must go to an input ending in /."""
    rejected(
        doc(task("a", outputs=["x"]), task("b", inputs={"all": "a*/x"})),
        'tasks[1].inputs["all"]',
        "must end with / (a directory)",
    )


def test_glob_reference_must_match(project: Path) -> None:
    """A glob reference matching no task is rejected."""
    rejected(
        doc(task("a", outputs=["x"]), task("b", inputs={"all/": "z-*/x"})),
        'tasks[1].inputs["all/"]',
        'no task matches "z-*"',
    )


def test_glob_reference_needs_the_output_on_every_match(project: Path) -> None:
    """Every task a glob matches must declare the output read."""
    rejected(
        doc(task("a-1", outputs=["x"]), task("a-2"), task("b", inputs={"all/": "a-*/x"})),
        'tasks[2].inputs["all/"]',
        'task "a-2" has no output "x"',
    )


def test_malformed_reference(project: Path) -> None:
    """A reference with an empty task or output part is rejected."""
    rejected(doc(task(inputs={"a": "/x"})), 'tasks[0].inputs["a"]', "invalid reference")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../escape", "has a .. component"),
        ("a/../../b", "has a .. component"),
        ("/etc/passwd", "is absolute"),
        ("a//b", "has an empty component"),
        ("a/./b", "has a . component"),
        ("a\\b", "contains a backslash"),
        ("C:x", "starts with a drive letter"),
        ("", "is empty"),
    ],
)
def test_outputs_are_confined(project: Path, name: str, problem: str) -> None:
    """An output must stay inside the working directory."""
    rejected(
        doc(task(outputs=["ok", name])),
        "tasks[0].outputs[1]",
        f"output {json.dumps(name)} {problem}",
    )


def test_output_cannot_end_with_slash(project: Path) -> None:
    """An output is a file: a trailing / leaves an empty component."""
    rejected(doc(task(outputs=["dir/"])), "tasks[0].outputs[0]", "empty component")


@pytest.mark.parametrize(("key", "problem"), [("../x", ".. component"), ("/x/", "is absolute")])
def test_input_names_are_confined(project: Path, key: str, problem: str) -> None:
    """An input name, file or directory, must stay inside the working directory."""
    rejected(doc(task(inputs={key: "palette"})), f'tasks[0].inputs["{key}"]', problem)


def test_two_inputs_in_one_place(project: Path) -> None:
    """Two inputs placed at the same local path are rejected."""
    rejected(
        doc(task("a", outputs=["x"]), task("b", inputs={"d/": "a/x", "d/a/x": "palette"})),
        'tasks[1].inputs["d/a/x"]',
        '"d/a/x" is placed twice (also by tasks[1].inputs["d/"])',
    )


def test_output_over_an_input(project: Path) -> None:
    """An output with the name of an input is rejected."""
    rejected(
        doc(task(inputs={"p.txt": "palette"}, outputs=["p.txt"])),
        "tasks[0].outputs[0]",
        '"p.txt" is placed twice',
    )


def test_file_and_directory_at_one_name(project: Path) -> None:
    """A name cannot be both a file and a directory of the working directory."""
    rejected(
        doc(task(inputs={"a": "palette", "a/b": "palette"})),
        'tasks[0].inputs["a/b"]',
        'would make "a" both a file and a directory',
    )


def test_missing_file(project: Path) -> None:
    """A files entry whose path does not exist is named with the path as written."""
    error = rejected(doc(files={"palette": "data/palete.txt"}), 'files["palette"]', "no such file")
    assert str(error) == 'dag.json: files["palette"]: no such file: data/palete.txt'


def test_file_must_be_regular(project: Path) -> None:
    """A directory given as a file is rejected."""
    rejected(doc(files={"palette": "data"}), 'files["palette"]', "not a regular file: data")


def test_missing_binary_path(project: Path) -> None:
    """A binary whose program does not exist is rejected."""
    rejected(doc(binaries={"prog": "bin/nope"}), 'binaries["prog"]', "no such file: bin/nope")


def test_directory_binary_must_be_a_bundle(project: Path) -> None:
    """A directory given as a program is rejected, suggesting a bundle."""
    rejected(doc(binaries={"prog": "bundle"}), 'binaries["prog"]', '"bundle": ..., "entry"')


def test_bundle_must_be_a_directory(project: Path) -> None:
    """A bundle names a directory."""
    rejected(
        doc(binaries={"prog": {"bundle": "bin/prog", "entry": "run.sh"}}),
        'binaries["prog"].bundle',
        "not a directory: bin/prog",
    )


def test_bundle_entry_must_exist(project: Path) -> None:
    """A bundle's entry is a file inside it."""
    rejected(
        doc(binaries={"prog": {"bundle": "bundle", "entry": "start.sh"}}),
        'binaries["prog"].entry',
        "no such file in the bundle: start.sh",
    )
    rejected(
        doc(binaries={"prog": {"bundle": "bundle", "entry": "lib"}}),
        'binaries["prog"].entry',
        "no such file in the bundle",
    )


def test_bundle_entry_is_confined(project: Path) -> None:
    """A bundle's entry cannot point outside the bundle."""
    rejected(
        doc(binaries={"prog": {"bundle": "bundle", "entry": "../bin/prog"}}),
        'binaries["prog"].entry',
        ".. component",
    )


def test_bundle_needs_its_entry(project: Path) -> None:
    """A bundle without entry is reported as such."""
    rejected(
        doc(binaries={"prog": {"bundle": "bundle"}}), 'binaries["prog"]', 'missing key "entry"'
    )


def test_invalid_platform(project: Path) -> None:
    """Platform names are <os>-<machine> in lower case."""
    rejected(
        doc(binaries={"prog": {"Linux-x86_64": "bin/prog"}}),
        'binaries["prog"]["Linux-x86_64"]',
        "invalid platform",
    )
    rejected(doc(binaries={"prog": {}}), 'binaries["prog"]', "no platform")


def test_binary_of_wrong_type(project: Path) -> None:
    """A binary is a path or an object."""
    rejected(doc(binaries={"prog": 3}), 'binaries["prog"]', "expected a path, a bundle")


def test_duplicate_ids(project: Path) -> None:
    """Two tasks with one id are rejected, naming both."""
    rejected(
        doc(task("a"), task("a")), "tasks[1].id", 'duplicate task id "a" (also made by tasks[0])'
    )


def test_duplicate_ids_after_expansion(project: Path) -> None:
    """Ids that collide only once expanded are rejected too."""
    rejected(
        doc(task("t-1"), task("t-{i}", foreach={"i": [0, 1]})),
        "tasks[1].id",
        'duplicate task id "t-1" (also made by tasks[0])',
    )


def test_invalid_ids(project: Path) -> None:
    """Ids are 1-128 of A-Z a-z 0-9 . _ - (and {} before expansion)."""
    rejected(doc(task("a/b")), "tasks[0].id", 'invalid task id "a/b"')
    rejected(doc(task("x" * 129)), "tasks[0].id", "invalid task id")
    rejected(doc(task("a}")), "tasks[0].id", 'task id "a}" is invalid')


def test_expanded_id_must_be_valid(project: Path) -> None:
    """A foreach value that makes a bad id is rejected with the id it made."""
    rejected(
        doc(task("t-{s}", foreach={"s": ["ok", "not ok"]})), "tasks[0].id", '"t-not ok" is invalid'
    )


def test_unknown_variable_in_id(project: Path) -> None:
    """A {name} in an id that no foreach defines is named."""
    rejected(
        doc(task("t-{j}", foreach={"i": [1]})),
        "tasks[0].id",
        "unknown variable {j} (foreach has i)",
    )
    rejected(doc(task("t-{i}")), "tasks[0].id", "unknown variable {i} (the task has no foreach)")


def test_unknown_variable_in_reference(project: Path) -> None:
    """A reference left with a {variable} is reported as such."""
    rejected(
        doc(task("a", outputs=["o"]), task("b", inputs={"x": "a-{k}/o"})),
        'tasks[1].inputs["x"]',
        "unknown variable {k}",
    )


def test_variable_missing_from_id(project: Path) -> None:
    """A foreach variable with several values must appear in the id."""
    rejected(
        doc(task("t-{i}", foreach={"i": [1, 2], "j": [1, 2]})),
        'tasks[0].foreach["j"]',
        "not used in the id",
    )


@pytest.mark.parametrize(
    ("foreach", "path", "problem"),
    [
        ({"i": []}, 'tasks[0].foreach["i"]', "no values"),
        ({"i": [True]}, 'tasks[0].foreach["i"][0]', "expected a string or a number, got a boolean"),
        ({"i": {"range": [3, 3]}}, 'tasks[0].foreach["i"].range', "empty range"),
        ({"i": {"range": [0]}}, 'tasks[0].foreach["i"].range', "expected [start, stop]"),
        ({"i": {"range": [0, 1.5]}}, 'tasks[0].foreach["i"].range[1]', "expected an integer"),
        ({"i": {"from": 1}}, 'tasks[0].foreach["i"]', 'unknown key "from"'),
        ({"i": "abc"}, 'tasks[0].foreach["i"]', "expected an array or"),
        ({"i j": [1]}, 'tasks[0].foreach["i j"]', "invalid variable name"),
    ],
)
def test_foreach_shapes(project: Path, foreach: dict[str, Any], path: str, problem: str) -> None:
    """foreach maps variables to a non-empty list of values or a non-empty range."""
    rejected(doc(task("t-{i}", foreach=foreach)), path, problem)


def test_foreach_over_a_million_is_rejected_before_expansion(project: Path) -> None:
    """A foreach of 1,000,001 tasks is refused without building them: the second case, 10**18
    tasks, could not be built in this machine's memory at all."""
    rejected(
        doc(task("t-{i}", foreach={"i": {"range": [0, MAX_TASKS + 1]}})),
        "tasks[0].foreach",
        "expands to 1,000,001 tasks, more than the limit of 1,000,000",
    )
    rejected(
        doc(task("t-{i}-{j}", foreach={"i": {"range": [0, 10**9]}, "j": {"range": [0, 10**9]}})),
        "tasks[0].foreach",
        "more than the limit",
    )


def test_job_over_a_million_tasks_in_total(project: Path) -> None:
    """Several foreach tasks together may not exceed 1,000,000 tasks either."""
    big = {"i": {"range": [0, 600_000]}}
    rejected(
        doc(task("a-{i}", foreach=big), task("b-{i}", foreach=big)), "tasks", "more than 1,000,000"
    )


def test_cycle_names_its_tasks(project: Path) -> None:
    """A cycle is rejected, naming its tasks in the order data flows."""
    error = rejected(
        doc(
            task("a", inputs={"i": "c/o"}, outputs=["o"]),
            task("b", inputs={"i": "a/o"}, outputs=["o"]),
            task("c", inputs={"i": "b/o"}, outputs=["o"]),
            task("d", inputs={"i": "c/o"}),
        ),
        "tasks",
        "cycle: a -> b -> c -> a",
    )
    assert str(error) == "dag.json: tasks: cycle: a -> b -> c -> a"


def test_cycle_through_after(project: Path) -> None:
    """Ordering edges count for cycles like data edges."""
    rejected(doc(task("a", after=["b"]), task("b", after=["a"])), "tasks", "cycle: a -> b -> a")


def test_task_reading_itself(project: Path) -> None:
    """A task cannot read its own output, even through a glob."""
    rejected(
        doc(task("a", inputs={"i": "a/o"}, outputs=["o"])),
        'tasks[0].inputs["i"]',
        'task "a" cannot read its own output',
    )
    rejected(
        doc(task("a-{i}", foreach={"i": [1, 2]}, inputs={"all/": "a-*/o"}, outputs=["o"])),
        'tasks[0].inputs["all/"]',
        'task "a-1" cannot read its own output (in task "a-1")',
    )


def test_wire_task_reading_itself_is_a_cycle() -> None:
    """On the wire, a task reading its own output is reported as a cycle of one."""
    wire_rejected(_wire_doc([_wire_task("a", inputs=[_from("a")])]), "tasks", "cycle: a -> a")


def test_after_must_match(project: Path) -> None:
    """Every after entry must name at least one task."""
    rejected(doc(task("a", after=["b*"])), "tasks[0].after[0]", 'no task matches "b*"')
    rejected(doc(task("a", after=["b"])), "tasks[0].after[0]", 'no task "b"')


def test_after_cannot_name_the_task_itself(project: Path) -> None:
    """A task cannot wait for itself, even through a glob."""
    rejected(
        doc(task("s-1"), task("s-2", after=["s-*"])), "tasks[1].after[0]", "cannot wait for itself"
    )


def test_results_must_name_outputs(project: Path) -> None:
    """Each result is TASK/OUTPUT naming a declared output."""
    rejected(doc(task(outputs=["o"]), results=["t"]), "results[0]", "expected TASK/OUTPUT")
    rejected(doc(task(outputs=["o"]), results=["t/p"]), "results[0]", 'task "t" has no output "p"')
    rejected(doc(task(outputs=["o"]), results=["u*/o"]), "results[0]", 'no task matches "u*"')


def test_expanded_task_errors_name_the_expansion(project: Path) -> None:
    """An error in one expansion of a foreach says which task it made."""
    rejected(
        doc(task("t-{i}", foreach={"i": ["a", ".."]}, outputs=["{i}/x"])),
        "tasks[0].outputs[0]",
        'output "../x" has a .. component (it would leave the working directory) (in task "t-..")',
    )


# -- The wire form ---------------------------------------------------------------------------


def _wire_task(task_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": task_id,
        "binary": "prog",
        "args": [],
        "env": {},
        "inputs": [],
        "outputs": ["o"],
        "cost": 1,
        "retries": 3,
        "timeout": None,
        "after": [],
    }
    return base | fields


def _from(task_id: str, local: str | None = None) -> dict[str, str]:
    return {"local": local or f"in-{task_id}", "task": task_id, "output": "o"}


def _wire_doc(tasks: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    binary = {"digest": DIGEST, "size": 5, "bundle": False, "entry": None}
    return {
        "name": "job",
        "priority": 0,
        "binaries": {"prog": {PLATFORM_ANY: binary}},
        "files": {"palette": {"digest": DIGEST, "size": 3}},
        "tasks": tasks,
        "results": [],
    } | top


def test_wire_round_trip(project: Path) -> None:
    """What the client sends is the job the coordinator reads back."""
    job = load(
        SPEC_EXAMPLE
        | {"binaries": {"render": "build/mandel", "merge": {"bundle": "bundle", "entry": "run.sh"}}}
        | {"priority": 7}
    )
    document = wire(job)
    assert document["tasks"][0]["cost"] == 50
    back = parse_wire_job(json.loads(json.dumps(document)))
    stamped = job.with_digests({p: (DIGEST, 1) for p in job.client_paths()})
    # The wire form carries no client path; everything else survives.
    assert back == replace(
        stamped,
        binaries={
            name: replace(b, variants={p: replace(v, path=None) for p, v in b.variants.items()})
            for name, b in stamped.binaries.items()
        },
        files={name: replace(f, path=None) for name, f in stamped.files.items()},
    )
    assert back.to_wire() == document


def test_to_wire_needs_every_digest(project: Path) -> None:
    """The client cannot send a job before every file has its digest."""
    job = load(SPEC_EXAMPLE)
    with pytest.raises(ValueError, match="has no digest"):
        job.to_wire()
    partial = job.with_digests({job.files["palette"].path or "": (DIGEST, 10)})
    assert partial.files["palette"].digest == DIGEST
    with pytest.raises(ValueError, match="binary 'render'"):
        partial.to_wire()
    with pytest.raises(ValueError, match="bad digest"):
        job.with_digests({job.files["palette"].path or "": ("ABC", 10)})


def test_wire_job_is_ordered_and_expanded() -> None:
    """The coordinator gets tasks in a topological order with its dependencies resolved."""
    job = parse_wire_job(
        _wire_doc(
            [_wire_task("b", inputs=[_from("a")], after=["c"]), _wire_task("a"), _wire_task("c")]
        )
    )
    assert [t.id for t in job.tasks] == ["a", "c", "b"]
    assert job.tasks[2].dependencies() == {"a", "c"}


@pytest.mark.parametrize(
    ("digest", "problem"),
    [(DIGEST.upper(), "invalid digest"), (DIGEST[:-1], "invalid digest"), (7, "expected a string")],
)
def test_wire_rejects_bad_digests(digest: object, problem: str) -> None:
    """Digests on the wire are 64 lowercase hex digits."""
    document = _wire_doc([_wire_task("a")])
    document["files"]["palette"]["digest"] = digest
    wire_rejected(document, 'files["palette"].digest', problem)


@pytest.mark.parametrize("size", [-1, True, 1.5, None])
def test_wire_rejects_bad_sizes(size: object) -> None:
    """Sizes on the wire are integers >= 0."""
    document = _wire_doc([_wire_task("a")])
    document["binaries"]["prog"][PLATFORM_ANY]["size"] = size
    wire_rejected(document, 'binaries["prog"]["any"].size', "")


def test_wire_rejects_unknown_and_missing_keys() -> None:
    """The wire form has exactly its keys, at every level."""
    wire_rejected(_wire_doc([_wire_task("a")], extra=1), "", 'unknown key "extra"')
    wire_rejected(_wire_doc([_wire_task("a", foreach={})]), "tasks[0]", 'unknown key "foreach"')
    del (document := _wire_doc([_wire_task("a")]))["tasks"][0]["timeout"]
    wire_rejected(document, "tasks[0]", 'missing key "timeout"')
    bad_input = _wire_doc([_wire_task("a", inputs=[{"local": "x", "file": "palette", "mode": 1}])])
    wire_rejected(bad_input, "tasks[0].inputs[0]", 'unknown key "mode"')


def test_wire_rejects_cycles() -> None:
    """A cycle sent on the wire is refused, named."""
    document = _wire_doc(
        [_wire_task("a", inputs=[_from("b")]), _wire_task("b", inputs=[_from("a")])]
    )
    wire_rejected(document, "tasks", "cycle: a -> b -> a")


def test_wire_rejects_long_cycles_without_recursion() -> None:
    """A cycle through thousands of tasks is found without recursion."""
    n = 5000
    tasks = [_wire_task(f"s{i}", inputs=[_from(f"s{(i - 1) % n}")]) for i in range(n)]
    with pytest.raises(JobFileError, match=r"cycle: s0 -> s1 -> s2 -> .* -> s4999 -> s0$"):
        parse_wire_job(_wire_doc(tasks))


@pytest.mark.parametrize(
    ("mutate", "path", "problem"),
    [
        (lambda d: d["tasks"].append(_wire_task("a")), "tasks[1].id", 'duplicate task id "a"'),
        (lambda d: d["tasks"][0].update(id="a*"), "tasks[0].id", "invalid task id"),
        (lambda d: d["tasks"][0].update(binary="x"), "tasks[0].binary", "unknown binary"),
        (lambda d: d["tasks"][0].update(cost=True), "tasks[0].cost", "positive number"),
        (lambda d: d["tasks"][0].update(outputs=["../o"]), "tasks[0].outputs[0]", ".. component"),
        (
            lambda d: d["tasks"][0].update(after=["a"]),
            "tasks[0].after[0]",
            "cannot wait for itself",
        ),
        (lambda d: d["tasks"][0].update(after=["z"]), "tasks[0].after[0]", 'no task "z"'),
        (
            lambda d: d["tasks"][0].update(env={"XWCH_JOB": "x"}),
            'tasks[0].env["XWCH_JOB"]',
            "reserved",
        ),
        (
            lambda d: d["tasks"][0].update(inputs=[{"local": "/x", "file": "palette"}]),
            "tasks[0].inputs[0].local",
            "is absolute",
        ),
        (
            lambda d: d["tasks"][0].update(inputs=[{"local": "x", "file": "nope"}]),
            "tasks[0].inputs[0].file",
            "unknown file",
        ),
        (
            lambda d: d["tasks"][0].update(inputs=[{"local": "x", "file": "palette", "task": "a"}]),
            "tasks[0].inputs[0]",
            "either a file or a task output",
        ),
        (
            lambda d: d["tasks"][0].update(inputs=[{"local": "x", "task": "a"}]),
            "tasks[0].inputs[0]",
            '"task" and "output"',
        ),
        (
            lambda d: d["tasks"][0].update(inputs=[{"local": "o", "file": "palette"}]),
            "tasks[0].outputs[0]",
            "placed twice",
        ),
        (
            lambda d: d["tasks"].append(_wire_task("b", inputs=[_from("a") | {"output": "p"}])),
            "tasks[1].inputs[0]",
            'task "a" has no output "p"',
        ),
        (
            lambda d: d["tasks"].append(_wire_task("b", inputs=[_from("q")])),
            "tasks[1].inputs[0]",
            'no task "q"',
        ),
        (lambda d: d.update(results=[{"task": "a", "output": "x"}]), "results[0]", "no output"),
        (lambda d: d.update(results=["a/o"]), "results[0]", "expected an object"),
        (lambda d: d.update(tasks=[]), "tasks", "at least one task"),
        (lambda d: d.update(tasks=[{}] * (MAX_TASKS + 1)), "tasks", "more than 1,000,000"),
        (
            lambda d: d["binaries"]["prog"].update({"Linux": {}}),
            'binaries["prog"]["Linux"]',
            "invalid platform",
        ),
        (
            lambda d: d["binaries"]["prog"][PLATFORM_ANY].update(entry="run.sh"),
            'binaries["prog"]["any"].entry',
            "must be null",
        ),
        (
            lambda d: d["binaries"]["prog"][PLATFORM_ANY].update(bundle=True, entry=None),
            'binaries["prog"]["any"].entry',
            "expected a string",
        ),
        (
            lambda d: d["binaries"]["prog"][PLATFORM_ANY].update(bundle=1),
            'binaries["prog"]["any"].bundle',
            "expected true or false",
        ),
        (lambda d: d.update(priority=None), "priority", "expected an integer"),
    ],
)
def test_wire_rechecks_every_rule(mutate: Any, path: str, problem: str) -> None:
    """The coordinator applies every structural rule again to what a client sends."""
    document = _wire_doc([_wire_task("a")])
    mutate(document)
    wire_rejected(document, path, problem)


def test_wire_rejects_non_objects() -> None:
    """Anything but a JSON object is not a job."""
    wire_rejected([1], "", "the job must be a JSON object, got an array")
