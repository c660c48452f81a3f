"""Confinement of a model runner, from what Linux offers an unprivileged process.

In order, each step optional where the kernel or the user lacks it, each reported:
1. resource limits: address space (`MAAS_RUNNER_MEMORY_MB`), file size, open files, no core
   dumps;
2. another user: a runner started by root drops to `nobody` (no capabilities, no access to
   root's files);
3. no_new_privs, then Landlock: files may be read only below the Python installation (the
   code it imports) and read and written only in its private scratch directory; TCP bind
   and connect are denied (ABI >= 4); abstract unix sockets and signals to processes
   outside the sandbox are denied (ABI >= 6). The archive comes in on an inherited file
   descriptor, so the artifact store itself is never opened;
4. seccomp: creating sockets, exec, fork (a clone without CLONE_THREAD), ptrace, reading
   other processes' memory, mount/namespace calls, bpf, perf and io_uring fail with EPERM.

Everything here is ctypes over the raw syscalls (x86_64 and aarch64), no dependency.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
import sys
import sysconfig
from pathlib import Path

NOBODY = 65534
_PR_SET_NO_NEW_PRIVS = 38
# Landlock (include/uapi/linux/landlock.h); the same numbers on every architecture.
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ALL_ABI1 = (1 << 13) - 1  # execute .. make_sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

# seccomp: syscall numbers per architecture (AUDIT_ARCH value, {name: number}).
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_CLONE_THREAD = 0x00010000
_DENIED = ("socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
           "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv",
           "process_vm_writev", "mount", "umount2", "pivot_root", "chroot", "setns", "unshare",
           "keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
           "open_by_handle_at", "name_to_handle_at")
_ARCHES: dict[str, tuple[int, int, dict[str, int]]] = {
    # machine: (AUDIT_ARCH, seccomp syscall, numbers)
    "x86_64": (0xC000003E, 317, {
        "socket": 41, "socketpair": 53, "connect": 42, "bind": 49, "listen": 50, "accept": 43,
        "accept4": 288, "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "clone": 56,
        "clone3": 435, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "setns": 308,
        "unshare": 272, "keyctl": 250, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "io_uring_setup": 425, "open_by_handle_at": 304, "name_to_handle_at": 303}),
    "aarch64": (0xC00000B7, 277, {
        "socket": 198, "socketpair": 199, "connect": 203, "bind": 200, "listen": 201,
        "accept": 202, "accept4": 242, "execve": 221, "execveat": 281, "clone": 220,
        "clone3": 435, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "setns": 268,
        "unshare": 97, "keyctl": 219, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "io_uring_setup": 425, "open_by_handle_at": 265, "name_to_handle_at": 264}),
}
_X32_SYSCALL_BIT = 0x40000000
_EPERM, _ENOSYS = 1, 38
_RET_ALLOW, _RET_ERRNO, _RET_KILL = 0x7FFF0000, 0x00050000, 0x80000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ConfinementError(RuntimeError):
    """A confinement step that must succeed failed."""


def _syscall(*args: object) -> int:
    result = int(_libc.syscall(*args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def limit_resources(memory_bytes: int, max_file_bytes: int) -> list[str]:
    """Address space, file size and open files capped; no core dumps."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    applied = [f"rlimit fsize {max_file_bytes >> 20} MiB", "rlimit nofile 256", "no core"]
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        applied.append(f"rlimit as {memory_bytes >> 20} MiB")
    return applied


def drop_user(scratch: Path, code_roots: list[Path]) -> list[str]:
    """As root: become `nobody` (the scratch directory is handed over first) when the Python
    installation is readable by others; else stay uid 0 with every capability dropped (file
    access is then Landlock's alone)."""
    if os.geteuid() != 0:
        return []
    if all(_world_readable(p) for p in code_roots):
        os.chown(scratch, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        return [f"user {NOBODY}"]
    _drop_capabilities()
    return ["capabilities dropped (uid 0: the Python installation is not readable by nobody)"]


def _world_readable(path: Path) -> bool:
    """Whether every folder down to `path` can be entered, and `path` read, by others."""
    chain = [path, *path.parents]
    return (all(p.stat().st_mode & 0o001 for p in chain if p.exists())
            and bool(path.stat().st_mode & 0o004))


def _drop_capabilities() -> None:
    """capset(2) with empty effective, permitted and inheritable sets (version 3 header)."""
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(bytes(24), 24)
    if _libc.capset(header, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"capset: {os.strerror(errno)}")


def readable_roots() -> list[Path]:
    """Where the runner's code lives: the Python installation and shared libraries."""
    found = {Path(p) for key in ("stdlib", "platstdlib", "purelib", "platlib")
             if (p := sysconfig.get_paths().get(key))}
    found |= {Path(sys.prefix), Path(sys.base_prefix) / "lib", Path("/usr/lib"), Path("/lib"),
              Path("/usr/lib64"), Path("/lib64"), Path("/usr/local/lib")}
    for entry in sys.path:  # editable installs: the source folders of their packages only
        path = Path(entry or ".").resolve()
        if path.is_dir() and any((path / pkg / "__init__.py").exists() for pkg in _OWN):
            found |= {path / pkg for pkg in _OWN}
    return sorted(p for p in found if p.is_dir())


_OWN = ("maas", "worker")  # the runner imports only these of ours
# Read-only system facts torch's CPU detection reads (nothing about other processes).
SYSTEM_FACTS = (Path("/proc/cpuinfo"), Path("/sys/devices/system/cpu"))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none."""
    try:
        return _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def _handled_fs(abi: int) -> int:
    handled = _FS_ALL_ABI1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    return handled


def landlock(read_only: list[Path], read_write: list[Path]) -> list[str]:
    """Restricts this thread (and what it starts) to reading `read_only` and reading and
    writing `read_write`; no TCP, no abstract sockets, no signals out where the ABI has
    them. [] when the kernel has no Landlock."""
    abi = landlock_abi()
    if abi <= 0:
        return []
    handled = _handled_fs(abi)
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0
    attr = struct.pack("QQQ", handled, net, scoped)
    size = 24 if abi >= 6 else (16 if abi >= 4 else 8)
    buffer = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, buffer, ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    try:
        for paths, access in ((read_only, _READ), (read_write, handled)):
            for path in paths:
                _allow(ruleset, path, access & handled)
        _no_new_privs()
        _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    applied = [f"landlock abi {abi}"]
    if net:
        applied.append("landlock tcp denied")
    if scoped:
        applied.append("landlock signals and abstract sockets scoped")
    return applied


def _allow(ruleset: int, path: Path, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not path.is_dir():  # a file: only the file rights apply
            access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        _syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                 rule, ctypes.c_uint32(0))
    finally:
        os.close(fd)


def _no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(errno)}")


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


_LD_W_ABS, _JEQ_K, _JSET_K, _JGE_K, _RET_K = 0x20, 0x15, 0x45, 0x35, 0x06


def _seccomp_program(arch: int, numbers: dict[str, int]) -> bytes:
    """Classic BPF: wrong architecture → kill; x32 → EPERM; each denied call → EPERM;
    clone without CLONE_THREAD → EPERM; clone3 → ENOSYS (libc falls back to clone)."""
    denied = sorted({numbers[n] for n in _DENIED if n in numbers})
    prog = [_bpf(_LD_W_ABS, 4), _bpf(_JEQ_K, arch, 1, 0), _bpf(_RET_K, _RET_KILL),
            _bpf(_LD_W_ABS, 0), _bpf(_JGE_K, _X32_SYSCALL_BIT, 0, 1),
            _bpf(_RET_K, _RET_ERRNO | _EPERM)]
    for nr in denied:
        prog += [_bpf(_JEQ_K, nr, 0, 1), _bpf(_RET_K, _RET_ERRNO | _EPERM)]
    prog += [_bpf(_JEQ_K, numbers["clone3"], 0, 1), _bpf(_RET_K, _RET_ERRNO | _ENOSYS),
             _bpf(_JEQ_K, numbers["clone"], 0, 3),
             _bpf(_LD_W_ABS, 16),  # args[0] (flags), low 32 bits
             _bpf(_JSET_K, _CLONE_THREAD, 1, 0), _bpf(_RET_K, _RET_ERRNO | _EPERM),
             _bpf(_RET_K, _RET_ALLOW)]
    return b"".join(prog)


def seccomp() -> list[str]:
    """Installs the filter on every thread of the process; [] on an unknown architecture."""
    known = _ARCHES.get(platform.machine())
    if known is None:
        return []
    arch, syscall_nr, numbers = known
    program = _seccomp_program(arch, numbers)
    filters = ctypes.create_string_buffer(program, len(program))

    class _Fprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = _Fprog(len(program) // 8, ctypes.cast(filters, ctypes.c_void_p))
    _no_new_privs()
    _syscall(syscall_nr, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC,
             ctypes.byref(fprog))
    return ["seccomp"]


def confine(scratch: Path, memory_bytes: int, max_file_bytes: int,
            extra_read: list[Path] | None = None,
            extra_read_write: list[Path] | None = None) -> list[str]:
    """Every step above, in order; what was applied, for the runner's first reply."""
    code_roots = readable_roots()  # before anything changes: sysconfig imports lazily
    applied = limit_resources(memory_bytes, max_file_bytes)
    try:
        applied += drop_user(scratch, [Path(sys.base_prefix), Path(sys.prefix)])
        facts = [p for p in SYSTEM_FACTS if p.exists()]
        applied += landlock([*code_roots, *facts, *(extra_read or [])],
                            [scratch, *(extra_read_write or [])])
        applied += seccomp()
    except OSError as exc:
        raise ConfinementError(f"cannot confine the model runner: {exc}") from exc
    return applied
