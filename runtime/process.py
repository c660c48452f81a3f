"""What every maas service process does at start: an event loop, signals; and how a maas
process starts a child that must die with it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

# Runs in the child: PR_SET_PDEATHSIG (Linux; kept across exec), gives up if the parent
# already died meanwhile, then execs the real command. argv: signal, parent pid, command...
_EXEC_DYING_WITH_PARENT = (
    "import contextlib, ctypes, os, sys\n"
    "with contextlib.suppress(OSError, AttributeError):\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, int(sys.argv[1]))\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n")


def dying_with_parent(argv: Sequence[str], sig: int = signal.SIGTERM) -> list[str]:
    """`argv` wrapped so that the child gets `sig` when this process (the forking thread)
    dies. Use this, never `preexec_fn`: Python code between fork and exec is unsafe in a
    process with threads, and in one that has used gRPC its fork handlers restart gRPC in
    the child, which then aborts ("epoll_wait error: Bad file descriptor") as the fds close."""
    return [sys.executable, "-c", _EXEC_DYING_WITH_PARENT, str(int(sig)), str(os.getpid()),
            *argv]


class RefusedToStart(RuntimeError):
    """A service cannot run with what it was given (e.g. a Redis that may evict jobs); the
    message says what to change. The process prints it and exits with status 2."""


def run(main: Coroutine[Any, Any, None]) -> None:
    """Runs a service's main coroutine on uvloop when it is installed (faster I/O)."""
    try:
        import uvloop
    except ImportError:
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main)
    except RefusedToStart as exc:
        print(f"maas: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Calls `stop` on SIGTERM or SIGINT (graceful shutdown of the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
