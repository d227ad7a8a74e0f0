"""Bundles: a program made of several files, shipped as one object (an uncompressed tar).

Packing is deterministic (sorted names, zeroed times and owners, only the executable bit of the
mode kept), so the same folder always gives the same digest and is uploaded once. Unpacking
trusts nothing: an archive comes from a stranger's job, so any member that could write outside
the destination or is not a plain file or folder is refused before anything is written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from xwch.errors import BundleError

_BLOCK = 1024 * 1024
_DIR_MODE = 0o755
_EXEC_MODE = 0o755
_FILE_MODE = 0o644


def _member(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _entries(directory: Path) -> list[tuple[str, Path]]:
    """Every entry under ``directory`` as (archive name, path), in a stable order."""
    found: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(directory, followlinks=False):
        base = Path(current)
        for name in dirs + files:
            path = base / name
            found.append((path.relative_to(directory).as_posix(), path))
    found.sort(key=lambda entry: entry[0])
    return found


def _resolve_link(directory: Path, path: Path) -> Path:
    """Where a symbolic link leads, if it stays inside the bundle; a file copy replaces it."""
    target = path.resolve()
    root = directory.resolve()
    if not target.is_relative_to(root):
        raise BundleError(f"{path}: symbolic link points outside the bundle ({target})")
    if not target.is_file():
        raise BundleError(f"{path}: symbolic link to something other than a regular file")
    return target


def pack_bundle(directory: Path, archive: Path) -> None:
    """Write ``directory`` as a deterministic tar at ``archive`` (replaced atomically)."""
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a directory")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=archive.parent, prefix=archive.name + ".", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name, path in _entries(directory):
                _add(tar, directory, name, path)
        os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add(tar: tarfile.TarFile, directory: Path, name: str, path: Path) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        path = _resolve_link(directory, path)
        st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        tar.addfile(_member(name, tarfile.DIRTYPE, _DIR_MODE))
    elif stat.S_ISREG(st.st_mode):
        # Only "is it executable" matters to a task; anything else would make the digest
        # depend on the packer's umask.
        mode = _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            tar.addfile(_member(name, tarfile.REGTYPE, mode, size), f)
    else:
        raise BundleError(f"{path}: only regular files and folders can be bundled")


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or (name.parts and ":" in name.parts[0]):
        raise BundleError(f"bundle member {member.name!r}: absolute path")
    if ".." in name.parts or "\\" in member.name:
        raise BundleError(f"bundle member {member.name!r}: path leaves the bundle")
    if member.issym() or member.islnk():
        raise BundleError(f"bundle member {member.name!r}: links are not allowed")
    if not (member.isreg() or member.isdir()):
        raise BundleError(f"bundle member {member.name!r}: only files and folders are allowed")
    if not name.parts and not member.isdir():
        raise BundleError(f"bundle member {member.name!r}: a file without a name")
    return name


def unpack_bundle(archive: Path, dest: Path) -> None:
    """Extract ``archive`` to the new folder ``dest``, all or nothing.

    Raises :class:`BundleError` for a member with an absolute path, a ``..`` component, a link
    or anything but a file or folder, or if ``dest`` exists. Extraction happens in a temporary
    folder next to ``dest``, renamed into place at the end.
    """
    if dest.exists():
        raise BundleError(f"{dest}: already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, mode="r:")
    except tarfile.TarError as e:
        raise BundleError(f"{archive}: not a bundle: {e}") from None
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp"))
    try:
        # mkdtemp makes it private; the unpacked program is as readable as any other file.
        tmp.chmod(_DIR_MODE)
        with tar:
            members = [(_check_member(m), m) for m in tar.getmembers()]
            for name, member in members:
                _extract(tar, member, tmp.joinpath(*name.parts))
        os.rename(tmp, dest)
    except tarfile.TarError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"{archive}: broken bundle: {e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    if source is None:
        raise BundleError(f"bundle member {member.name!r}: cannot be read")
    mode = _EXEC_MODE if member.mode & 0o111 else _FILE_MODE
    # O_EXCL: a second member with the same name must not overwrite the first silently.
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise BundleError(f"bundle member {member.name!r}: appears twice") from None
    with source, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, _BLOCK)
    os.chmod(target, mode)
