"""The manifest of a saved checkpoint: the object that names every file of the checkpoint
directory, each as the ordered digests and sizes of its chunks.

The manifest is itself an object (JSON, named by its SHA-256); a relaunched attempt reads it
first, then fetches the chunks and lays the files out again. A worker never trusts a manifest
further than the attempt's own directory: every path is checked as strictly as the job file's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from xwch.dagcheck import DIGEST_RE, local_name_problem

MANIFEST_FORMAT = 1
# Chunks of this many bytes (the last of a file shorter): small enough that a change of a few
# percent of a big checkpoint sends a few percent of its bytes, big enough that a 1 GiB
# checkpoint is 4096 chunks (bench/checkpoints.py measures the bytes sent per save).
CHUNK_SIZE = 256 * 1024


class BadManifest(Exception):
    """A manifest that cannot be what a worker wrote."""


@dataclass(frozen=True)
class Chunk:
    digest: str
    size: int


@dataclass(frozen=True)
class FileEntry:
    """One regular file: its path under the checkpoint directory, mode bits and chunks."""

    path: str
    mode: int
    chunks: tuple[Chunk, ...]

    @property
    def size(self) -> int:
        return sum(c.size for c in self.chunks)


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileEntry, ...]
    # Directories, so that empty ones come back too.
    dirs: tuple[str, ...] = ()

    @property
    def content(self) -> int:
        """The bytes of its files."""
        return sum(f.size for f in self.files)

    def chunks(self) -> dict[str, int]:
        """Every distinct chunk: digest -> size."""
        return {c.digest: c.size for f in self.files for c in f.chunks}

    def encode(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "dirs": list(self.dirs),
            "files": [
                {
                    "path": f.path,
                    "mode": f.mode,
                    "chunks": [[c.digest, c.size] for c in f.chunks],
                }
                for f in self.files
            ],
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()


def decode_manifest(raw: bytes) -> Manifest:
    """The manifest in ``raw``; :class:`BadManifest` naming what is wrong."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadManifest(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise BadManifest(f"not a manifest of format {MANIFEST_FORMAT}")
    dirs = doc.get("dirs")
    files = doc.get("files")
    if not isinstance(dirs, list) or not isinstance(files, list):
        raise BadManifest('"dirs" and "files" must be arrays')
    return Manifest(
        files=tuple(_file_entry(f) for f in files),
        dirs=tuple(_path(d) for d in dirs),
    )


def _path(value: object) -> str:
    if not isinstance(value, str):
        raise BadManifest(f"a path must be a string, not {value!r}")
    problem = local_name_problem(value)
    if problem is not None:
        raise BadManifest(f"path {value!r} {problem}")
    return value


def _file_entry(value: object) -> FileEntry:
    if not isinstance(value, dict):
        raise BadManifest("a file must be an object")
    mode = value.get("mode")
    chunks = value.get("chunks")
    if type(mode) is not int or not 0 <= mode <= 0o777:
        raise BadManifest(f"bad mode {mode!r}")
    if not isinstance(chunks, list):
        raise BadManifest('"chunks" must be an array')
    parsed = []
    for chunk in chunks:
        if (
            not isinstance(chunk, list)
            or len(chunk) != 2
            or not isinstance(chunk[0], str)
            or not DIGEST_RE.fullmatch(chunk[0])
            or type(chunk[1]) is not int
            or not 0 < chunk[1] <= CHUNK_SIZE
        ):
            raise BadManifest(f"bad chunk {chunk!r}")
        parsed.append(Chunk(chunk[0], chunk[1]))
    return FileEntry(_path(value.get("path")), mode, tuple(parsed))
