"""Ctrl-C for the ``ser`` command: stop within a second, exit 130, leave no partial output.

A plain ``KeyboardInterrupt`` is not enough: raised inside a C library's callback (openSMILE
calls back into Python through ctypes) it is printed and swallowed, and the run goes on. So
:func:`stop_on_interrupt` installs a SIGINT handler that records the interrupt and raises
``KeyboardInterrupt`` (the normal path: ``finally`` blocks drop temporary files and release
locks). When Python reports that exception as swallowed (``sys.unraisablehook``), or when the
process is still alive ``GRACE_S`` seconds later, the registered clean-ups run (temporary files
of the atomic writers, held lock files) and the process ends with ``os._exit(EXIT_INTERRUPTED)``.
Finished outputs are only ever replaced by a rename, so an interrupted run leaves the previous
ones as they were.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
GRACE_S = 1.0  # how long the normal KeyboardInterrupt path gets before the process is ended

_interrupted = threading.Event()
_temporaries: set[Path] = set()  # temporary files being written now, removed if the run is stopped
_cleanups: list[Callable[[], None]] = []
_main_pid: int | None = None  # the process that installed the handler (forked workers inherit it)
_ending = threading.Lock()
_next_hook: Callable[[Any], None] = sys.unraisablehook


def stop_on_interrupt() -> None:
    """Install the SIGINT handler (and the hook that sees it swallowed) in the command's process."""
    global _main_pid, _next_hook
    _main_pid = os.getpid()
    signal.signal(signal.SIGINT, _on_sigint)
    if sys.unraisablehook is not _on_unraisable:
        _next_hook = sys.unraisablehook
        sys.unraisablehook = _on_unraisable


def interrupted() -> bool:
    """Whether this process has been sent SIGINT since the handler was installed."""
    return _interrupted.is_set()


def track_temporary(path: str | Path) -> None:
    """Remember a temporary file being written, so an interrupted run removes it."""
    _temporaries.add(Path(path))


def forget_temporary(path: str | Path) -> None:
    """The temporary file was renamed into place or removed."""
    _temporaries.discard(Path(path))


def on_interrupt(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` (best effort) when an interrupted run ends (see :func:`exit_interrupted`)."""
    _cleanups.append(cleanup)


def exit_interrupted() -> None:
    """Remove temporary files, run the clean-ups, say so on stderr and exit 130 at once.

    ``os._exit``: no further Python code runs, so no worker pool is waited for and no half-done
    write is finished. Called by the watchdog, or by the entry point once the stack has unwound.
    """
    with _ending:  # the watchdog and the main thread may both get here: the first one ends it
        _end()


def _on_sigint(signum: int, frame: object) -> None:
    if os.getpid() != _main_pid:  # a forked worker (a process pool's): die of the signal, silently
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return
    if _interrupted.is_set():  # a second Ctrl-C: do not wait for the grace period
        exit_interrupted()
    _interrupted.set()
    watchdog = threading.Timer(GRACE_S, exit_interrupted)
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt


def _on_unraisable(unraisable: Any) -> None:
    """A KeyboardInterrupt that Python could only print (raised in a ctypes callback): end now."""
    if _interrupted.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt):
        exit_interrupted()
    _next_hook(unraisable)


def _end() -> None:
    for path in list(_temporaries):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    for cleanup in _cleanups:
        with contextlib.suppress(Exception):  # best effort: the process ends either way
            cleanup()
    try:
        sys.stderr.write("error: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)
