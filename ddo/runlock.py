"""One writer per run directory: an advisory lock on ``RUN_DIR/.lock`` held while a training
process writes there.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on the file: a second ``ddo train`` into a directory in use
is refused at once, in one line naming the process that holds it. The kernel releases the lock
when the process ends in any way (``kill -9`` included), so a killed run never leaves its directory
locked and ``--resume`` works at once; the file itself is removed on a normal release and is
harmless when left behind (holding it is what counts, not its existence).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from .errors import UserError, WriteError
from .paths import check_out_dir

LOCK_NAME = ".lock"
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # file systems without flock (some network mounts)


class RunLock:
    """A held lock on ``path`` (through the open descriptor ``fd``); :meth:`release` gives it back.
    ``made``: the folders :func:`acquire` created, deepest first."""

    def __init__(self, path: Path | None, fd: int | None, made: tuple = ()):
        self.path, self.fd, self.made = path, fd, made

    def release(self) -> None:
        """Remove the lock file (when it is still this lock's) and close it, which releases the lock;
        then remove the folders the lock created if they are still empty (a run refused after
        locking, before writing anything, leaves nothing behind)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None
        for folder in self.made:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (the run wrote there), or gone
                break

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
        if pid > 0:
            return f" (process {pid})"
    return ""


def acquire(out_dir, flag: str = "--out") -> RunLock:
    """Lock ``out_dir`` for this process (creating the folder), or refuse in one line
    (:class:`UserError`) when another process holds it."""
    out_dir = check_out_dir(out_dir, flag)
    path = out_dir / LOCK_NAME
    made = tuple(p for p in (out_dir, *out_dir.parents) if not p.exists())  # deepest first
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise UserError(f"{out_dir} is in use by another ddo train{holder}; wait for it to end or choose "
                                f"another {flag}") from None
            except OSError as e:
                os.close(fd)
                if e.errno in UNSUPPORTED:  # no locking on this file system: nothing to hold
                    return RunLock(None, None)
                raise
            try:  # the previous holder may have removed the file between our open and our lock: lock the new one
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as e:
        from .checkpoint import write_failure

        raise WriteError(write_failure(path, e)) from None
    return RunLock(path, fd, made)


def held(out_dir) -> bool:
    """Whether a process holds the lock of ``out_dir`` now (creates nothing)."""
    path = Path(out_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


__all__ = ["acquire", "held", "RunLock", "LOCK_NAME"]
