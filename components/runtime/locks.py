"""Workspace locks: one run at a time writes a shared output (feature caches, metrics, the registry).

:func:`hold_lock` takes an exclusive ``fcntl.flock`` on a lock file beside the output
(``metrics/train.json`` → ``metrics/.train.json.lock``), or inside a folder the run owns
(``ser featurize --out F`` → ``F/.ser.lock``), and writes who holds it into that file (what, pid,
host, start time), so a second run can say whom it is waiting for. The kernel drops a flock
when the process that holds it dies, SIGKILL included: a killed run never leaves a stale lock,
and the next run takes it at once. The file is removed when the lock is released normally.

Locks are re-entrant within a process (a flow holding ``metrics/train.json`` may call code that
takes the same lock). ``flock`` locks are advisory and local to one machine: they keep this
project's own entry points apart, and ``dvc repro`` keeps its own lock besides.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from components.errors import SerError
from components.runtime import interrupts

POLL_S = 0.2  # how often a waiting run tries the lock again
INSIDE_NAME = ".ser.lock"  # the lock file of a folder locked with ``inside=True``
_held: dict[Path, int] = {}  # lock files this process holds → nesting depth
_cleanup_registered = False


def _register_cleanup() -> None:
    """An interrupted run removes the lock files it holds (the kernel frees the flocks themselves)."""
    global _cleanup_registered
    _cleanup_registered = True
    interrupts.on_interrupt(lambda: [target.unlink(missing_ok=True) for target in list(_held)])


def lock_file(path: str | Path, inside: bool = False) -> Path:
    """The lock file guarding ``path``: a hidden file beside it, or with ``inside``, ``<path>/.ser.lock``."""
    path = Path(os.path.abspath(path))
    return path / INSIDE_NAME if inside else path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def hold_lock(path: str | Path, what: str, wait_s: float = 0.0, inside: bool = False) -> Iterator[None]:
    """Hold the workspace lock on ``path`` for the block; another holder makes this wait, then refuse.

    Args:
        path: The shared output this run writes (a folder or a file); need not exist yet.
        what: What this run is doing, shown to a run that finds the lock taken (e.g. ``featurize``).
        wait_s: Seconds to wait for another run to finish; 0 = refuse at once.
        inside: ``path`` is a folder the run owns (``ser featurize --out``): keep the lock file
            in it, so a run writes nothing outside the folder it was given. Every holder of
            one lock must pass the same ``inside``.

    Raises:
        SerError: Another process still holds the lock after ``wait_s`` seconds; the message
            names it (what, pid, host, start time) and says what to do.
    """
    target = lock_file(path, inside)
    if target in _held:
        _held[target] += 1
        try:
            yield
        finally:
            _held[target] -= 1
        return
    if not _cleanup_registered:
        _register_cleanup()
    fd = _acquire(target, Path(path), wait_s)
    _held[target] = 1
    try:
        _write_owner(fd, what)
        yield
    finally:
        del _held[target]
        target.unlink(missing_ok=True)  # before unlocking: a waiter that opened it re-checks the inode
        os.close(fd)  # releases the flock


def _acquire(target: Path, path: Path, wait_s: float) -> int:
    """An open descriptor of ``target`` holding its exclusive flock."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            left = deadline - time.monotonic()
            if left <= 0:
                raise SerError(busy_message(owner, path, wait_s)) from None
            time.sleep(min(POLL_S, left))
            continue
        try:  # the holder we waited for may have removed the file: lock the one that is there now
            current = os.stat(target).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


def _write_owner(fd: int, what: str) -> None:
    owner = {
        "what": what,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)


def _read_owner(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # caught between truncate and write
        return {}


def busy_message(owner: dict[str, Any], path: Path, wait_s: float = 0.0) -> str:
    """One line: who holds the lock on ``path`` and what to do."""
    facts = [owner["what"]] if owner.get("what") else []
    if "pid" in owner:
        host = owner.get("host")
        facts.append(f"pid {owner['pid']}" + (f" on {host}" if host and host != socket.gethostname() else ""))
    if owner.get("started"):
        facts.append(f"started {datetime.fromisoformat(owner['started']).strftime('%H:%M:%S')}")
    who = f"another run ({', '.join(facts)})" if facts else "another run"
    waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
    return f"{who} is writing {_shown(path)}{waited}; wait for it to finish or stop it"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
