"""The example task programs in native/ and the example jobs in examples/.

The programs are built once for this module with `make -C native` and run directly with
subprocess, the way a worker runs a task: in a fresh working directory holding its inputs.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native"
EXAMPLES = REPO / "examples"
PALETTE = EXAMPLES / "mandelbrot" / "palette.txt"

# SHA-256 of the image the mandelbrot example produces (16 tiles with its palette, merged).
MANDELBROT_IMAGE_SHA256 = "41809ad80f777af153810843e6a60c3bf94bad985983118e741768bf619c2ced"
# SHA-256 of reduce/total.tsv of the wordcount example.
WORDCOUNT_TOTAL_SHA256 = "2c43fedaa4e2884b02bd78b9c0177def65dd40a6f32073be33a8116b2eed5f8c"

PROGRAMS = ["mandel", "merge", "wc-map", "wc-reduce", "fail", "spin", "cat2", "noop", "steps"]


@pytest.fixture(scope="module")
def build() -> Path:
    """Build native/ once; skip the module when there is no C toolchain."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs `make` and a C compiler (`cc`) to build native/")
    proc = subprocess.run(
        ["make", "-C", str(NATIVE)], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"make -C native failed:\n{proc.stdout}\n{proc.stderr}")
    out = NATIVE / "build"
    for name in PROGRAMS:
        assert (out / name).is_file(), f"make did not build {name}"
    return out


def run(
    build: Path, prog: str, *args: str | Path, cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(build / prog), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{prog} {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


def render_tiles(
    build: Path, tiles_dir: Path, n: int, *opts: str, palette: Path | None = None
) -> None:
    """Render N tiles as a job would: each in its own working directory, placed as
    TILES_DIR/tile-I/tile.pgm."""
    for i in range(n):
        work = tiles_dir.parent / f"work-{tiles_dir.name}-{i}"
        work.mkdir()
        if palette is not None:
            shutil.copy(palette, work / "palette.txt")
        run(build, "mandel", "--tile", str(i), "--of", str(n), *opts, "tile.pgm", cwd=work)
        (tiles_dir / f"tile-{i}").mkdir(parents=True)
        (work / "tile.pgm").rename(tiles_dir / f"tile-{i}" / "tile.pgm")


def parse_pgm(data: bytes) -> tuple[list[str], int, int, bytes]:
    """(comments, width, height, pixels) of a binary PGM."""
    assert data[:2] == b"P5"
    pos, tokens, comments = 2, [], []
    while len(tokens) < 3:
        if data[pos : pos + 1].isspace():
            pos += 1
        elif data[pos : pos + 1] == b"#":
            end = data.index(b"\n", pos)
            comments.append(data[pos:end].decode())
            pos = end
        else:
            m = re.compile(rb"\d+").match(data, pos)
            assert m, f"bad PGM header at byte {pos}"
            tokens.append(int(m.group()))
            pos = m.end()
    assert tokens[2] == 255
    return comments, tokens[0], tokens[1], data[pos + 1 :]


# ---- mandel and merge ------------------------------------------------------------------------


def parse_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, pixels) of an 8-bit grayscale PNG, every chunk's CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)  # checks the Adler-32 too
    rows = [raw[y * (width + 1) : (y + 1) * (width + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter None
    return width, height, b"".join(row[1:] for row in rows)


def test_merge_writes_a_png_with_the_same_pixels(build: Path, tmp_path: Path) -> None:
    """Asked for OUT.png, merge writes a PNG any viewer opens, of the same pixels."""
    render_tiles(build, tmp_path / "tiles", 4, palette=PALETTE)
    run(build, "merge", "tiles", "image.pgm", cwd=tmp_path)
    run(build, "merge", "tiles", "image.png", cwd=tmp_path)
    _, w, h, pixels = parse_pgm((tmp_path / "image.pgm").read_bytes())
    assert parse_png((tmp_path / "image.png").read_bytes()) == (w, h, pixels)


def test_mandel_tiles_merged_equal_full_render(build: Path, tmp_path: Path) -> None:
    """Rendering the image as 16 tiles and merging them gives exactly the bytes of rendering it
    in one piece, so splitting a job into tiles never changes the picture."""
    render_tiles(build, tmp_path / "tiles", 16, palette=PALETTE)
    run(build, "merge", "tiles", "merged.pgm", cwd=tmp_path)
    whole = tmp_path / "whole"
    whole.mkdir()
    shutil.copy(PALETTE, whole / "palette.txt")
    run(build, "mandel", "--tile", "0", "--of", "1", "full.pgm", cwd=whole)
    merged = (tmp_path / "merged.pgm").read_bytes()
    assert merged == (whole / "full.pgm").read_bytes()
    comments, w, h, pixels = parse_pgm(merged)
    assert (w, h, len(pixels)) == (1024, 768, 1024 * 768)
    assert comments == ["# xwch-tile 0 1 1024 768"]


def test_mandel_uneven_bands_merge_exactly(build: Path, tmp_path: Path) -> None:
    """When the height is not a multiple of the tile count, the bands still cover every row
    once: 7 tiles of a 61 x 45 image merge into the one-piece render."""
    opts = ("--width", "61", "--height", "45", "--iter", "80")
    render_tiles(build, tmp_path / "tiles", 7, *opts)
    run(build, "merge", "tiles", "merged.pgm", cwd=tmp_path)
    run(build, "mandel", "--tile", "0", "--of", "1", *opts, "full.pgm", cwd=tmp_path)
    assert (tmp_path / "merged.pgm").read_bytes() == (tmp_path / "full.pgm").read_bytes()
    rows = []
    for i in range(7):
        comments, w, h, pixels = parse_pgm((tmp_path / f"tiles/tile-{i}/tile.pgm").read_bytes())
        assert comments == [f"# xwch-tile {i} 7 61 45"]
        assert w == 61 and len(pixels) == w * h
        rows.append(h)
    assert sum(rows) == 45 and max(rows) - min(rows) <= 1


def test_mandel_is_deterministic(build: Path, tmp_path: Path) -> None:
    """Rendering the same tile twice gives the same bytes, so a retried task produces the same
    output as the first attempt."""
    run(build, "mandel", "--tile", "5", "--of", "16", "a.pgm", cwd=tmp_path)
    run(build, "mandel", "--tile", "5", "--of", "16", "b.pgm", cwd=tmp_path)
    assert (tmp_path / "a.pgm").read_bytes() == (tmp_path / "b.pgm").read_bytes()


def test_mandel_uses_palette_file(build: Path, tmp_path: Path) -> None:
    """A palette.txt in the working directory sets the gray levels: every pixel is black (the
    set itself) or one of the palette's values, and the picture differs from the default."""
    run(build, "mandel", "--tile", "0", "--of", "1", "--width", "64", "--height", "48",
        "default.pgm", cwd=tmp_path)  # fmt: skip
    (tmp_path / "palette.txt").write_text("100\n200\n")
    run(build, "mandel", "--tile", "0", "--of", "1", "--width", "64", "--height", "48",
        "custom.pgm", cwd=tmp_path)  # fmt: skip
    _, _, _, pixels = parse_pgm((tmp_path / "custom.pgm").read_bytes())
    assert set(pixels) == {0, 100, 200}
    assert (tmp_path / "custom.pgm").read_bytes() != (tmp_path / "default.pgm").read_bytes()


def test_mandel_rejects_bad_palette(build: Path, tmp_path: Path) -> None:
    """A palette line that is not an integer 0-255 fails the task with a message naming the
    file and line, instead of rendering a wrong picture."""
    (tmp_path / "palette.txt").write_text("10\n300\n")
    proc = run(build, "mandel", "--tile", "0", "--of", "4", "t.pgm", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "palette.txt:2" in proc.stderr
    assert not (tmp_path / "t.pgm").exists()


def test_mandel_rejects_bad_usage(build: Path, tmp_path: Path) -> None:
    """A tile index outside 0..N-1 or a missing --of is a usage error (status 2) with the
    usage line on stderr."""
    for args in (["--tile", "16", "--of", "16", "t.pgm"], ["--tile", "0", "t.pgm"]):
        proc = run(build, "mandel", *args, cwd=tmp_path, check=False)
        assert proc.returncode == 2
        assert "usage: mandel --tile I --of N" in proc.stderr


def test_merge_rejects_missing_tile(build: Path, tmp_path: Path) -> None:
    """If a tile is missing, merge fails with a non-zero status and says which tile is missing,
    rather than writing an image with a hole."""
    render_tiles(build, tmp_path / "tiles", 4, "--width", "32", "--height", "24")
    shutil.rmtree(tmp_path / "tiles" / "tile-2")
    proc = run(build, "merge", "tiles", "out.pgm", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "missing 1 of 4 tiles" in proc.stderr
    assert proc.stderr.rstrip().endswith(": 2")
    assert not (tmp_path / "out.pgm").exists()


def test_merge_rejects_bad_or_inconsistent_tiles(build: Path, tmp_path: Path) -> None:
    """A file that is not a tile, a truncated tile, a duplicated tile or tiles of different
    images all make merge fail with a message naming the problem."""
    opts = ("--width", "32", "--height", "24")
    render_tiles(build, tmp_path / "tiles", 2, *opts)
    tile0 = tmp_path / "tiles" / "tile-0" / "tile.pgm"
    good = tile0.read_bytes()
    cases = {
        b"hello\n": "not a binary PGM",
        b"P5\n32 12\n255\n" + bytes(32 * 12): "not an xwch tile",
        good[:-5]: "expected 384 bytes of pixels, found 379",
        good.replace(b"tile 0 2 32 24", b"tile 1 2 32 24"): "duplicate tile 1",
    }
    for content, message in cases.items():
        tile0.write_bytes(content)
        proc = run(build, "merge", "tiles", "out.pgm", cwd=tmp_path, check=False)
        assert proc.returncode == 1, message
        assert message in proc.stderr
    tile0.write_bytes(good)
    other = tmp_path / "other"
    other.mkdir()
    run(build, "mandel", "--tile", "0", "--of", "2", "--width", "40", "--height", "24",
        "tile.pgm", cwd=other)  # fmt: skip
    shutil.copy(other / "tile.pgm", tile0)
    proc = run(build, "merge", "tiles", "out.pgm", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "tiles disagree" in proc.stderr
    proc = run(build, "merge", "no-such-dir", "out.pgm", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "no-such-dir" in proc.stderr


def test_mandelbrot_example_image_hash(build: Path, tmp_path: Path) -> None:
    """The mandelbrot example (16 tiles with its palette, then merge) always yields the same
    image, with the SHA-256 published in examples/README.md."""
    render_tiles(build, tmp_path / "tiles", 16, palette=PALETTE)
    run(build, "merge", "tiles", "image.png", cwd=tmp_path)
    digest = hashlib.sha256((tmp_path / "image.png").read_bytes()).hexdigest()
    assert digest == MANDELBROT_IMAGE_SHA256


# ---- word count ------------------------------------------------------------------------------


def test_wc_map_counts_words(build: Path, tmp_path: Path) -> None:
    """wc-map counts runs of ASCII letters and digits, case-insensitively, and lists them
    sorted by word; punctuation and non-ASCII bytes separate words."""
    (tmp_path / "in.txt").write_bytes(
        b"Hello, hello WORLD! 42 apples; don't stop-42\nh\xc3\xa9llo zebra hello"
    )
    run(build, "wc-map", "in.txt", "out.tsv", cwd=tmp_path)
    assert (tmp_path / "out.tsv").read_text() == (
        "42\t2\napples\t1\ndon\t1\nh\t1\nhello\t3\nllo\t1\nstop\t1\nt\t1\nworld\t1\nzebra\t1\n"
    )


def test_wc_map_empty_input(build: Path, tmp_path: Path) -> None:
    """An empty shard gives an empty count table, not an error."""
    (tmp_path / "in.txt").write_bytes(b"")
    run(build, "wc-map", "in.txt", "out.tsv", cwd=tmp_path)
    assert (tmp_path / "out.tsv").read_bytes() == b""


def test_wc_reduce_sums_counts(build: Path, tmp_path: Path) -> None:
    """wc-reduce adds up the counts of every .tsv found under the directory (in task
    sub-directories, as a job delivers them) and ignores other files."""
    counts = tmp_path / "counts"
    for task, text in {
        "map-0": "apple\t2\npear\t1\n",
        "map-1": "apple\t3\nzucchini\t7\n",
        "map-2/deeper": "pear\t10\n",
    }.items():
        (counts / task).mkdir(parents=True)
        (counts / task / "counts.tsv").write_text(text)
    (counts / "map-0" / "notes.txt").write_text("apple\t100\n")
    run(build, "wc-reduce", "counts", "total.tsv", cwd=tmp_path)
    assert (tmp_path / "total.tsv").read_text() == "apple\t5\npear\t11\nzucchini\t7\n"


def test_wc_reduce_rejects_malformed_line(build: Path, tmp_path: Path) -> None:
    """A line that is not word<TAB>count fails the reduce with the file and line number."""
    (tmp_path / "counts").mkdir()
    (tmp_path / "counts" / "c.tsv").write_text("apple\t2\npear 3\n")
    proc = run(build, "wc-reduce", "counts", "total.tsv", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "c.tsv:2: malformed line" in proc.stderr


def test_wordcount_example_matches_python(build: Path, tmp_path: Path) -> None:
    """Mapping the 8 example shards and reducing them gives the same table as counting the
    words in Python, with the SHA-256 published in examples/README.md."""
    expected: collections.Counter[bytes] = collections.Counter()
    for i in range(8):
        shard = EXAMPLES / "wordcount" / "shards" / f"shard-{i}.txt"
        assert 20_000 <= shard.stat().st_size <= 50_000
        expected.update(w.lower() for w in re.findall(rb"[A-Za-z0-9]+", shard.read_bytes()))
        (tmp_path / "counts" / f"map-{i}").mkdir(parents=True)
        run(build, "wc-map", shard, f"counts/map-{i}/counts.tsv", cwd=tmp_path)
    run(build, "wc-reduce", "counts", "total.tsv", cwd=tmp_path)
    total = (tmp_path / "total.tsv").read_bytes()
    assert total == b"".join(b"%s\t%d\n" % kv for kv in sorted(expected.items()))
    assert hashlib.sha256(total).hexdigest() == WORDCOUNT_TOTAL_SHA256


# ---- test helpers: fail, spin, noop, cat2 ----------------------------------------------------


def test_fail_exits_with_given_status(build: Path, tmp_path: Path) -> None:
    """`fail N` exits with status N after a recognizable stderr message and a stdout line;
    without an argument it fails with status 3."""
    proc = run(build, "fail", "7", cwd=tmp_path, check=False)
    assert proc.returncode == 7
    assert "xwch-fail: failing on purpose with status 7" in proc.stderr
    assert proc.stdout.strip()
    proc = run(build, "fail", cwd=tmp_path, check=False)
    assert proc.returncode == 3
    assert "xwch-fail: failing on purpose with status 3" in proc.stderr


def test_spin_takes_its_time_then_writes_output(build: Path, tmp_path: Path) -> None:
    """`spin S OUT` (burning CPU) and `spin --sleep S OUT` (idle) last at least S seconds and
    then write OUT."""
    for mode in ([], ["--sleep"]):
        start = time.monotonic()
        run(build, "spin", *mode, "0.3", "out.txt", cwd=tmp_path)
        assert time.monotonic() - start >= 0.3
        assert (tmp_path / "out.txt").read_text() == "spun 0.3 seconds\n"
        (tmp_path / "out.txt").unlink()


def test_noop(build: Path, tmp_path: Path) -> None:
    """`noop` succeeds at once; `noop OUT` writes "ok\\n" and `noop OUT TEXT` writes TEXT."""
    assert run(build, "noop", cwd=tmp_path).returncode == 0
    run(build, "noop", "a.txt", cwd=tmp_path)
    assert (tmp_path / "a.txt").read_text() == "ok\n"
    run(build, "noop", "b.txt", "hello\n", cwd=tmp_path)
    assert (tmp_path / "b.txt").read_text() == "hello\n"


def test_cat2(build: Path, tmp_path: Path) -> None:
    """`cat2 A B OUT` writes A's bytes then B's; a missing input fails and leaves no OUT."""
    (tmp_path / "a").write_bytes(b"first\x00\n")
    (tmp_path / "b").write_bytes(b"second")
    run(build, "cat2", "a", "b", "out", cwd=tmp_path)
    assert (tmp_path / "out").read_bytes() == b"first\x00\nsecond"
    proc = run(build, "cat2", "a", "missing", "out2", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "missing" in proc.stderr
    assert not (tmp_path / "out2").exists()


def test_diamond_example_by_hand(build: Path, tmp_path: Path) -> None:
    """Running the diamond example's four tasks in order gives examples/diamond/expected-d.txt."""
    dag = json.loads((EXAMPLES / "diamond" / "dag.json").read_text())
    files = {k: EXAMPLES / "diamond" / v for k, v in dag["files"].items()}
    for task in dag["tasks"]:
        work = tmp_path / task["id"]
        work.mkdir()
        for local, ref in task.get("inputs", {}).items():
            src = tmp_path / ref if "/" in ref else files[ref]
            shutil.copy(src, work / local)
        binary = Path(dag["binaries"][task["binary"]]).name
        run(build, binary, *task["args"], cwd=work)
    expected = (EXAMPLES / "diamond" / "expected-d.txt").read_bytes()
    assert (tmp_path / "d" / "d.txt").read_bytes() == expected


# ---- example job files -----------------------------------------------------------------------


def expand(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The copies of TASK its `foreach` yields (only what the checks below need)."""
    foreach = task.get("foreach")
    if not foreach:
        return [task]
    names = list(foreach)
    domains = [
        list(range(*v["range"])) if isinstance(v, dict) else list(v) for v in foreach.values()
    ]
    out = []
    for combo in itertools.product(*domains):
        text = json.dumps({k: v for k, v in task.items() if k != "foreach"})
        for name, value in zip(names, combo, strict=True):
            text = text.replace("{" + name + "}", str(value))
        out.append(json.loads(text))
    return out


@pytest.mark.parametrize("example", ["mandelbrot", "wordcount", "diamond"])
def test_example_job_files_are_consistent(build: Path, example: str) -> None:
    """Each example dag.json is valid JSON whose binaries and files exist relative to it (the
    binaries once native/ is built) and whose tasks refer only to declared binaries, files,
    tasks and outputs, so `xwch-client submit` accepts it."""
    path = EXAMPLES / example / "dag.json"
    dag = json.loads(path.read_text())
    base = path.parent
    assert set(dag) <= {"name", "binaries", "files", "tasks", "results", "priority"}
    for name, binary in dag["binaries"].items():
        paths = binary.values() if isinstance(binary, dict) else [binary]
        for p in paths:
            assert (base / p).is_file(), f"binary {name}: {p} does not exist"
    files = dag.get("files", {})
    for name, p in files.items():
        assert (base / p).is_file(), f"file {name}: {p} does not exist"

    tasks = [t for task in dag["tasks"] for t in expand(task)]
    outputs = {t["id"]: set(t.get("outputs", [])) for t in tasks}
    assert len(outputs) == len(tasks), "task ids are not unique"
    for t in tasks:
        assert t["binary"] in dag["binaries"]
        for local, ref in t.get("inputs", {}).items():
            if "/" not in ref:
                assert ref in files, f"{t['id']}: input {local} refers to unknown file {ref}"
                continue
            task_part, output = ref.split("/", 1)
            matches = [i for i in outputs if re.fullmatch(task_part.replace("*", ".*"), i)]
            assert matches, f"{t['id']}: input {local} refers to no task"
            assert "*" not in task_part or local.endswith("/")
            for m in matches:
                assert output in outputs[m], f"{t['id']}: {m} has no output {output}"
    for ref in dag.get("results", []):
        task_id, output = ref.split("/", 1)
        assert output in outputs[task_id]


def test_steps_keeps_its_step_and_resumes_from_it(build: Path, tmp_path: Path) -> None:
    """`steps` keeps the step it reached in DIR/state (through a rename, never a .tmp left
    behind) and a second run resumes there; OUT says the same whatever the interruptions."""
    proc = run(build, "steps", "--steps", "3", "--sleep", "0", "ck", "out.txt", cwd=tmp_path)
    assert "steps: started at step 0" in proc.stdout
    assert (tmp_path / "ck" / "state").read_text() == "step 3\n"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["state"]
    (tmp_path / "ck" / "state").write_text("step 1\n")
    proc = run(build, "steps", "--steps", "3", "--sleep", "0", "ck", "out.txt", cwd=tmp_path)
    assert "steps: resumed at step 1" in proc.stdout
    assert proc.stdout.count("work") == 2
    assert (tmp_path / "out.txt").read_text() == "3 steps done\n"


def test_steps_keeps_a_big_state_when_asked(build: Path, tmp_path: Path) -> None:
    """--state-mib M keeps M MiB in DIR/blob, the same bytes for the same steps taken."""
    for folder in ("a", "b"):
        args = ("--steps", "2", "--sleep", "0", "--state-mib", "2", f"{folder}/ck", "out")
        (tmp_path / folder).mkdir()
        run(build, "steps", *args, cwd=tmp_path)
    blob = (tmp_path / "a" / "ck" / "blob").read_bytes()
    assert len(blob) == 2 * 1024 * 1024
    assert blob == (tmp_path / "b" / "ck" / "blob").read_bytes()
    proc = run(
        build, "steps", "--steps", "2", "--bogus", "1", "ck", "out", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr
