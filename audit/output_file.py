"""Output files written the safe way: every command that writes a file goes through here.

The rule: a command creates the file it is given and never substitutes what is at the
path; ``-`` is standard output.

- nothing at the path: the file is created with the umask's mode (0o666 minus the umask);
- a regular file: refused unless ``force``; then replaced, keeping its permission bits;
- a symlink: followed; the rules apply to the file it points to (the link stays);
- a directory, FIFO, device or socket: refused (``-`` writes to standard output);
- one of the store's own files (``protect``; compared by device and inode, so a hard link
  or a symlink to them is caught too): refused, even with ``force``.

The bytes go to a temporary file beside the target, ``.NAME.clusterstore-PID.tmp``, that
is removed on every way out (an exception, Ctrl-C, SIGTERM, which is turned into
``SystemExit(143)`` while the file is written). Only a complete file is placed: a new one
with ``os.link`` (which fails if something appeared at the path meanwhile), a replaced one
with ``os.replace`` after checking that the path still holds the file that was checked.
Temporary files left by a process that no longer exists (SIGKILL, power loss) are removed
by the next write into the same directory.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

from clusterstore.eventstore.errors import OutputFileError

STDOUT = "-"
TMP_TAG = "clusterstore"
_TMP_NAME = re.compile(rf"^\..+\.{TMP_TAG}-(\d+)\.tmp$")
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def temp_name(target: Path, pid: int | None = None) -> Path:
    """The temporary file written beside ``target`` by process ``pid`` (default: this one)."""
    return target.with_name(f".{target.name}.{TMP_TAG}-{os.getpid() if pid is None else pid}.tmp")


@contextmanager
def open_output(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through; it appears at ``path`` only when the block
    succeeds (see the module docstring). ``-`` yields standard output, flushed at the end."""
    if os.fspath(path) == STDOUT:
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target, existing = _check(Path(path), force=force, protect=protect)
    remove_stale_temps(target.parent)
    tmp = temp_name(target)
    with _sigterm_raises():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o666)
        except FileExistsError as e:
            raise OutputFileError(f"{path}: another export to it is running in this process") from e
        except OSError as e:
            raise OutputFileError(f"cannot write {path}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "wb") as out:
                if existing is not None:
                    os.fchmod(out.fileno(), stat.S_IMODE(existing.st_mode))
                yield out
                out.flush()
                os.fsync(out.fileno())
            _place(tmp, target, existing, shown=path)
        finally:
            tmp.unlink(missing_ok=True)


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _check(
    given: Path, *, force: bool, protect: Sequence[str | os.PathLike[str]]
) -> tuple[Path, os.stat_result | None]:
    """The path to write (symlinks resolved) and what is there now (None: nothing)."""
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    via = f" (the symlink {given} points to it)" if target != given else ""
    parent = target.parent
    if not parent.is_dir():
        raise OutputFileError(f"cannot write {target}: the directory {parent} does not exist")
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputFileError(f"cannot write {target}: {e.strerror}") from e
    if st is None:
        return target, None
    if stat.S_ISLNK(st.st_mode):  # a link loop, or a link that changed since realpath
        raise OutputFileError(f"{given} is a symlink that does not resolve to a file")
    for is_kind, kind in _KINDS:
        if is_kind(st.st_mode):
            raise OutputFileError(
                f"{target}{via} is {kind}, not a regular file; give a file name "
                "(or - for standard output)"
            )
    for own in protect:
        try:
            mine = os.stat(own)
        except OSError:
            continue
        if (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
            named = "" if os.path.abspath(own) == os.path.abspath(target) else f" ({own})"
            raise OutputFileError(
                f"{target}{via} is one of the store's own files{named}; it is never "
                "overwritten, even with --force; give another file name"
            )
    if not force:
        raise OutputFileError(
            f"{target}{via} already exists; pass --force to replace it, or give another name"
        )
    return target, st


def _place(tmp: Path, target: Path, existing: os.stat_result | None, *, shown: object) -> None:
    """Put the complete temporary file at ``target`` without replacing anything unchecked."""
    if existing is None:
        try:
            os.link(tmp, target)
            return
        except FileExistsError as e:
            raise OutputFileError(
                f"{shown} appeared while the export was written; it was left as it is"
            ) from e
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise OutputFileError(f"cannot write {shown}: {e.strerror}") from e
            # a file system without hard links: check again just before the rename
            if os.path.lexists(target):
                raise OutputFileError(
                    f"{shown} appeared while the export was written; it was left as it is"
                ) from e
    else:
        try:
            now = os.lstat(target)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (existing.st_dev, existing.st_ino):
            raise OutputFileError(
                f"{shown} changed while the export was written; it was left as it is"
            )
    try:
        os.replace(tmp, target)
    except OSError as e:
        raise OutputFileError(f"cannot write {shown}: {e.strerror}") from e


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temporary files in ``directory`` left by processes that no longer exist."""
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TMP_NAME.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        path = directory / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we wrote: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OverflowError:
        return False
    return True


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` (so ``finally`` blocks run
    and the temporary file is removed); the previous handler is restored afterwards. Only
    the main thread can set handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
