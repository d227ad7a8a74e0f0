"""Linux Landlock through ctypes: a process gives up writing anywhere but in a few places.

Landlock (Linux 5.13 and later, when the kernel enables it) lets an unprivileged process restrict
itself and every process it later starts; nothing it does afterwards lifts the restriction, not
even root. The launcher uses it to make an attempt's working directory the only place its task
may write. Reads and execution stay allowed: a task reads its inputs, runs ``/bin/sh``, links
against system libraries.

Only the standard library: the launcher imports this for every attempt.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

# Syscall numbers are the same on every architecture but alpha (include/uapi/asm-generic).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Access rights (include/uapi/linux/landlock.h), with the ABI version that introduced them.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2: linking or renaming into another directory
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_WRITE_V1 = (
    ACCESS_FS_WRITE_FILE
    | ACCESS_FS_REMOVE_DIR
    | ACCESS_FS_REMOVE_FILE
    | ACCESS_FS_MAKE_CHAR
    | ACCESS_FS_MAKE_DIR
    | ACCESS_FS_MAKE_REG
    | ACCESS_FS_MAKE_SOCK
    | ACCESS_FS_MAKE_FIFO
    | ACCESS_FS_MAKE_BLOCK
    | ACCESS_FS_MAKE_SYM
)
# What may be granted on a file rather than a directory.
_FILE_RIGHTS = ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE

# Devices every program may write to, wherever it runs (``> /dev/null``).
WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


class LandlockError(Exception):
    """Landlock is missing, or refused the restriction."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The Landlock ABI the running kernel offers; 0 when it has none (or is not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def handled_writes(abi: int) -> int:
    """Every right that creates, changes or removes something, as far as ``abi`` knows them."""
    rights = _WRITE_V1
    if abi >= 2:
        rights |= ACCESS_FS_REFER
    if abi >= 3:
        rights |= ACCESS_FS_TRUNCATE
    return rights


def set_no_new_privs() -> None:
    """Programs started from now on gain no privilege (setuid bits are ignored)."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise LandlockError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(errno)}")


def restrict_writes(writable: Iterable[str], devices: Iterable[str] = WRITABLE_DEVICES) -> int:
    """Allow this process and its children to write only beneath ``writable`` and to ``devices``.

    Also, with ABI 6, they may no longer signal processes or reach abstract Unix sockets outside
    (the worker, the volunteer's desktop session). Returns the ABI used; raises
    :class:`LandlockError` when the kernel has no Landlock or refuses.
    """
    abi = abi_version()
    if abi < 1:
        raise LandlockError("this kernel offers no Landlock")
    libc = _libc()
    handled = handled_writes(abi)
    attr = _RulesetAttr(handled, 0, (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise LandlockError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for directory in writable:
            _allow(libc, ruleset, directory, handled)
        for device in devices:
            if os.path.exists(device):
                _allow(libc, ruleset, device, handled & _FILE_RIGHTS)
        set_no_new_privs()
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise LandlockError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return abi


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise LandlockError(f"{path}: {e.strerror}") from None
    try:
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise LandlockError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
