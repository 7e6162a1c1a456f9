"""Folder locks: one process at a time in a run or export folder.

``FOLDER/.lock`` holds the owner's pid, host and start time (JSON). It is created with
``O_CREAT | O_EXCL`` and, on POSIX, held with ``fcntl.flock`` for as long as the owner runs: the
kernel drops the flock when the owner dies (even by SIGKILL), so a lock file whose flock can be
taken is stale, whatever its pid says (pids get reused), and is taken over with a log line. A lock
from another host is never taken over (its process cannot be checked from here). Without
``fcntl`` (Windows) a lock is stale when its pid no longer runs on this host.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from .errors import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"


@dataclass(frozen=True)
class LockOwner:
    """Who holds a folder lock: ``pid``, ``host`` (``socket.gethostname()``), ``started`` (Unix time, s)."""

    pid: int
    host: str
    started: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))})"


def read_owner(path: str | os.PathLike) -> LockOwner | None:
    """The owner recorded in a lock file; None when it is missing, empty or unreadable (an owner
    killed between creating and writing it)."""
    try:
        d = json.loads(Path(path).read_text())
        return LockOwner(int(d["pid"]), str(d["host"]), float(d["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _try_flock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class FolderLock:
    """Exclusive lock on ``folder`` for one process (``with FolderLock(out, "training run"):``).

    Args:
        folder: the folder to lock (created if missing); the lock file is ``folder/.lock``.
        what: what the folder holds, for messages (``training run``, ``export``).
        log: receives one line when a stale lock is taken over.

    Raises (from :meth:`acquire` / ``__enter__``):
        UsageError: another live process holds the folder (the message names its pid and host),
        or the lock belongs to another host; the message says how to proceed.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run", log: Callable[[str], None] = print):
        self.folder, self.what, self.log = Path(folder), what, log
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the folder {self.folder} ({e.strerror or e}); give a writable folder") from e
        for _ in range(5):  # each retry follows another process's create/release between our calls
            fd = self._create() if not self.path.exists() else None
            if fd is None:
                fd = self._take_over()
            if fd is not None:
                me = LockOwner(os.getpid(), socket.gethostname(), time.time())
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(me.__dict__) + "\n").encode(), 0)
                self._fd = fd
                return self
        raise self._busy(read_owner(self.path))

    def _create(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return None
        except OSError as e:
            raise UsageError(f"cannot create the lock file {self.path} ({e.strerror or e}); give a writable folder") from e
        if _try_flock(fd):
            return fd
        os.close(fd)  # a process that found the file before we locked it took it over
        return None

    def _take_over(self) -> int | None:
        """A file descriptor holding the existing lock file when its owner is gone, None to retry."""
        owner = read_owner(self.path)
        if owner is not None and owner.host != socket.gethostname():
            raise UsageError(f"{self.folder} is locked by {owner.describe()}, another host: another {self.what} may be "
                             f"using it; if no such process runs there, delete {self.path}")
        if fcntl is None and owner is not None and psutil.pid_exists(owner.pid):
            raise self._busy(owner)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UsageError(f"cannot open the lock file {self.path} ({e.strerror or e}); give a writable folder") from e
        if not _try_flock(fd):
            os.close(fd)
            raise self._busy(read_owner(self.path) or owner)
        if not _same_file(fd, self.path):  # released (unlinked) by its owner after we opened it
            os.close(fd)
            return None
        self.log(f"taking over the stale lock {self.path}"
                 + (f" of {owner.describe()} (no longer running)" if owner else " (its owner died before writing it)"))
        return fd

    def _busy(self, owner: LockOwner | None) -> UsageError:
        who = owner.describe() if owner else "another process"
        return UsageError(f"{self.folder} is in use by {who}: another {self.what} is writing there; wait for it to "
                          f"finish, stop it, or use another folder")

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
