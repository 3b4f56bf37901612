"""Files every entry point writes atomically, and the one way a command reports a user's mistake."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from components.errors import SerError
from components.runtime import interrupts


def project_root(project_dir: str | Path | None = None) -> Path:
    """The checkout a deployed flow works in: ``project_dir``, else ``SER_PROJECT_DIR``, else the cwd.

    Raises:
        SerError: The folder is not a checkout of this project.
    """
    project = Path(project_dir or os.environ.get("SER_PROJECT_DIR") or ".").resolve()
    if not (project / "dvc.yaml").is_file() or not (project / "params.yaml").is_file():
        raise SerError(
            f"{project}: not a checkout of this project (no dvc.yaml/params.yaml); set SER_PROJECT_DIR"
        )
    return project


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a partial one."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; renamed over ``path`` when it ends.

    A reader sees the old file or the new one, never a partial one. The new file keeps the mode
    of the file it replaces, else gets the one the umask gives a new file (not ``mkstemp``'s
    0600). If the block raises, or the run is interrupted, the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    interrupts.track_temporary(tmp)
    try:
        yield tmp
        replace_keeping_mode(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        interrupts.forget_temporary(tmp)


def replace_keeping_mode(tmp: str | Path, path: str | Path) -> None:
    """Rename ``tmp`` over ``path``, giving it ``path``'s current mode (or the umask's for a new file)."""
    os.chmod(tmp, new_file_mode(path))
    os.replace(tmp, path)


def new_file_mode(path: str | Path) -> int:
    """The mode a rewritten ``path`` gets: its own if it exists, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output(path: str | Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: one line naming it and why.

    Args:
        path: The file (or, with ``folder``, the folder) a command will write; need not exist.
        option: The option that named it, for the message (``--out``).
        folder: ``path`` is a folder the command writes files into.

    Raises:
        SerError: ``path`` is a folder where a file is wanted (or a file where a folder is),
            or the nearest existing folder is read-only or not writable by this user.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise SerError(f"{option} {path}: is a file, not a folder; give a folder")
    if not folder and path.is_dir():
        raise SerError(f"{option} {path}: is a folder; give a file name")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SerError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SerError(
            f"{option} {path}: cannot write in {existing} (read-only or no permission); choose another place"
        )


def exit_on_error(main: Callable[[], Any]) -> None:
    """Run a command's body; print a ``SerError`` as one line on stderr and exit 1.

    After Ctrl-C (with :func:`interrupts.stop_on_interrupt` installed), whatever the body ended
    with, the command says ``error: interrupted`` and exits 130.
    """
    import sys

    try:
        main()
    except SerError as err:
        if interrupts.interrupted():
            interrupts.exit_interrupted()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except BaseException:
        if interrupts.interrupted():  # a KeyboardInterrupt, or what it broke (a worker pool)
            interrupts.exit_interrupted()
        raise
