"""One owner per data dir: an exclusive `flock` on DATA/lock, held for the life of the process.

A second process on the same dir (a node, or `meshchat up` checking its nodes' dirs) finds
the lock taken and stops before it touches anything else there or binds a port, so it never
joins the mesh under the owner's id. The kernel releases a flock when its process ends,
however it ends (kill -9 too), so a lock file left behind never blocks a restart; the pid
written in it only names the owner in the error the second process reports.
"""

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

LOCK_FILE: Final = "lock"
# The owner writes its pid just after taking the lock; a process that finds the lock taken
# but no pid yet waits this long for it, then names no pid.
PID_WAIT_S: Final = 0.5
PID_POLL_INTERVAL_S: Final = 0.02
# A pid is at most 7 digits on Linux (pid_max <= 2^22); anything longer is not ours.
PID_BYTES_MAX: Final = 16


class DataDirInUseError(Exception):
    """Another process holds the data dir's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        owner = "another process" if pid is None else f"pid {pid}"
        super().__init__(f"data dir {data_dir} is in use by {owner}")
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """The held lock of one data dir; `release()` (or leaving the `with`) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self._identity = _identity(os.fstat(fd))

    @classmethod
    def acquire(cls, data_dir: Path) -> "DataDirLock":
        """Take the lock of `data_dir` (created if missing) or raise DataDirInUseError."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        # No O_TRUNC: the file may be the owner's, and its pid is what we report.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _wait_for_pid(fd)
            os.close(fd)
            raise DataDirInUseError(data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @classmethod
    def check_free(cls, data_dir: Path) -> None:
        """Raise DataDirInUseError if a process holds `data_dir`; take nothing."""
        cls.acquire(data_dir).release()

    def lost(self) -> str | None:
        """Why the lock no longer guards the dir (its file deleted or replaced), else None:
        a new process could then take a fresh lock file beside us."""
        try:
            current = _identity(os.stat(self.path))
        except FileNotFoundError:
            return f"lock file {self.path} was deleted"
        if current != self._identity:
            return f"lock file {self.path} was replaced"
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _wait_for_pid(fd: int) -> int | None:
    deadline = time.monotonic() + PID_WAIT_S
    while True:
        text = os.pread(fd, PID_BYTES_MAX, 0).decode("ascii", errors="replace").strip()
        with contextlib.suppress(ValueError):
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(PID_POLL_INTERVAL_S)
