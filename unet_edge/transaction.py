"""Folders that are replaced as a whole: build beside, swap in one step, lock, clean up after kills.

An export folder (or a Jetson bundle) is only usable when all its files come from one run of one
command. :class:`StagedFolder` builds the new folder beside the target ``OUT`` (same parent, so
renames stay on one filesystem) and puts it in place in one step. Names beside ``OUT``:

``.OUT.lock/``
    the lock (:class:`unet_edge.locks.FolderLock`: a ``fcntl.flock``-held file naming the pid,
    released by the kernel when its process dies). A second writer of the same ``OUT`` gets a
    :class:`~unet_edge.errors.UsageError` naming it. The (empty) folder stays after release.
``.OUT.staging-<pid>``
    the folder being built. Folders of killed runs are removed (with a log line) by the next run,
    which holds the lock, so no other run can still be writing them.
``OUT.failed/``
    the last failed attempt (its files and report), kept for inspection; ``OUT`` is untouched.

What survives what (``kill -9`` at any moment, the old ``OUT`` complete):

* before the swap: ``OUT`` is the complete old folder; a hidden staging folder is left over.
* the swap is ``renameat2(staging, OUT, RENAME_EXCHANGE)`` (Linux >= 3.15; ext4, xfs, btrfs,
  tmpfs): one system call exchanges the two names, so ``OUT`` is the old folder before it and
  the complete new one after it. The old folder, now under the staging name, is then deleted;
  a kill during that deletion leaves a hidden partial folder that the next run removes.
* where the kernel or filesystem cannot exchange (macOS, some network filesystems) the swap
  is two renames, ``OUT`` -> ``.OUT.old-<pid>`` then staging -> ``OUT``; a kill between them
  leaves no ``OUT`` for a moment's window, and the next run puts the old folder back.

Not covered: power loss (nothing is fsync'ed), and readers that open files of ``OUT`` while it
is being swapped (each file is complete, but two reads may straddle the swap).
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path
from typing import Callable

from .errors import UsageError
from .locks import FolderLock

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        True when swapped; False when this kernel, libc or filesystem cannot exchange.

    Raises:
        OSError: any other failure (missing path, permissions).
    """
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def lock_for(target: str | os.PathLike, what: str = "export", log: Callable[[str], None] = print) -> FolderLock:
    """The lock of ``target``: a :class:`unet_edge.locks.FolderLock` on the hidden folder
    ``.<name>.lock`` beside it (a lock inside ``target`` would move away with the swap)."""
    target = Path(target)
    return FolderLock(target.parent / f".{target.name}.lock", what=what, log=log)


class StagedFolder:
    """Build a folder in ``.<name>.staging-<pid>`` and swap it onto ``target`` in one step
    (module docstring: the guarantees and the names used beside ``target``).

    ::

        with StagedFolder(out, marker="export_report.json", owns=is_export_file, log=log) as stage:
            ...write into stage.path...
            stage.commit()          # or stage.keep_failed() -> out.failed/

    On entry: takes the lock, puts back an old folder left by a swap interrupted between its two
    renames, removes stale staging folders (logged), and checks ``target``: absent, an empty
    folder, or a folder of this kind (``marker`` file present) holding only names ``owns``
    accepts. Leaving the block without :meth:`commit` or :meth:`keep_failed` (an exception,
    Ctrl-C) deletes the staging folder; ``target`` is never touched then.

    Args:
        target: the folder to replace.
        marker: file name that makes a folder one of this kind (e.g. ``export_report.json``).
        owns: ``owns(name) -> bool`` for top-level names a folder of this kind may hold; a
            target holding anything else is refused, since replacing it would delete it.
        log: receives progress lines.
        what: the producer named in messages (``export``, ``Jetson bundle``).

    Raises (on entry):
        UsageError: ``target`` is a file or a symbolic link, is not a folder of this kind and not
            empty, or holds files ``owns`` rejects (all named; nothing is deleted); another
            process holds the lock.
    """

    def __init__(self, target: str | os.PathLike, marker: str, owns: Callable[[str], bool],
                 log: Callable[[str], None] = print, what: str = "export"):
        self.target = Path(target)
        self.marker, self.owns, self.log, self.what = marker, owns, log, what
        self._a = "an" if what[:1].lower() in "aeiou" else "a"
        self.path = self.target.parent / f".{self.target.name}.staging-{os.getpid()}"
        self.failed_path = self.target.parent / f"{self.target.name}.failed"
        self._lock = lock_for(self.target, what, log)
        self._done = False

    def __enter__(self) -> "StagedFolder":
        self._check_target()
        try:
            self._lock.acquire()
        except UsageError as e:
            raise UsageError(f"--out {self.target}: {e}") from None
        try:
            self._recover()
            self._check_target()  # again under the lock: another run may have changed it meanwhile
            if self.path.exists():
                shutil.rmtree(self.path)
            self.path.mkdir()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self._done and self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self._lock.release()

    def _leftovers(self) -> list[Path]:
        heads = (f".{self.target.name}.staging-", f".{self.target.name}.old-")
        parent = self.target.parent
        return sorted(p for p in parent.iterdir() if p.name.startswith(heads)) if parent.is_dir() else []

    def _recover(self) -> None:
        """Put back an old folder of an interrupted two-rename swap; remove stale staging/old folders."""
        for p in self._leftovers():
            if p.name.startswith(f".{self.target.name}.old-") and not self.target.exists():
                os.rename(p, self.target)
                self.log(f"  restored {self.target} from {p.name} ({self._a} {self.what} was killed while swapping folders)")
                continue
            shutil.rmtree(p, ignore_errors=True)
            self.log(f"  removed stale {p.name} (left by {self._a} {self.what} that was killed or crashed)")

    def _check_target(self) -> None:
        t = self.target
        above = next((a for a in t.parents if a.exists() or a.is_symlink()), None)
        if above is not None and not above.is_dir():
            raise UsageError(f"--out {t} is under {above}, which is a file, not a folder; give a folder path")
        if t.is_symlink():
            raise UsageError(f"--out {t} is a symbolic link; give the folder it points to ({t.resolve()})")
        if not t.exists():
            return
        if not t.is_dir():
            raise UsageError(f"--out {t} is a file; give a folder (it is created, or replaced when it holds a "
                             f"previous {self.what})")
        names = sorted(p.name for p in t.iterdir())
        if not names:
            return
        if self.marker not in names:
            raise UsageError(f"--out {t} holds files and is not {self._a} {self.what} folder (no {self.marker}): "
                             f"{_listing(names)}; give a new or empty folder (nothing was deleted)")
        foreign = [n for n in names if not self.owns(n)]
        if foreign:
            raise UsageError(f"--out {t} holds files {self._a} {self.what} did not write: {_listing(foreign)}; a new "
                             f"{self.what} replaces the whole folder, so move them away or give another --out "
                             "(nothing was deleted)")

    def commit(self) -> Path:
        """Swap the staging folder onto ``target`` (atomically where the OS can) and delete the old one."""
        if self.target.exists():
            if exchange(self.path, self.target):
                old = self.path
            else:
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.rename(self.target, old)
                os.rename(self.path, self.target)
            self._done = True
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, self.target)
            self._done = True
        return self.target

    def keep_failed(self) -> Path | None:
        """Move the staging folder to ``<target>.failed`` (replacing an older one) for inspection;
        None (and the staging folder deleted) when it holds nothing."""
        self._done = True
        if not any(self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        if self.failed_path.is_symlink() or self.failed_path.is_file():
            self.failed_path.unlink()
        elif self.failed_path.exists():
            shutil.rmtree(self.failed_path)
        os.rename(self.path, self.failed_path)
        return self.failed_path


def _listing(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
