"""One driver per experiment: a lock file in the experiment's storage folder, kept fresh by a heartbeat.

Two drivers of one experiment would train every trial twice into one MLflow run and one Train folder. The
lock is a file created exclusively (``O_CREAT | O_EXCL``, atomic on local disks and on NFS v3+), holding who
took it (host, pid, the pid's start time, since when, the command); its modification time is the heartbeat,
touched every :data:`HEARTBEAT_S` by a thread for as long as the driver runs. A second driver refuses at once,
naming the holder. A lock is stale, and taken over with a warning, when its heartbeat is older than
:data:`STALE_AFTER_S` (a holder on another host that died) or when its holder's pid is gone from this host
(a SIGKILLed driver), so ``sfh resume`` never waits on a dead driver.

The folder must be a local path or a mounted shared filesystem (NFS, Lustre, ...), which every node and
every user's driver sees. Object stores (s3://, gs://) have no exclusive create: there :func:`hold` warns
that no lock is held and the user must make sure only one driver runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_FILE = "sfh.lock"
#: How often the holder touches its lock, and how long without a touch makes a lock stale.
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class LockHeld(RuntimeError):
    """Another live driver holds the experiment's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough to find the process and to tell a reused pid from the original one."""

    host: str
    pid: int
    #: The pid's start time on its host (clock ticks since boot, /proc/PID/stat), None where unknown.
    pid_started: int | None
    since: str
    command: str
    token: str

    @staticmethod
    def me() -> Holder:
        return Holder(socket.gethostname(), os.getpid(), _started(os.getpid()),
                      time.strftime("%Y-%m-%d %H:%M:%S %Z"), " ".join(["sfh", *sys.argv[1:]]), uuid.uuid4().hex)

    def alive_here(self) -> bool | None:
        """Whether the holder still runs, when it ran on this host (None: another host, cannot tell)."""
        if self.host != socket.gethostname():
            return None
        started = _started(self.pid)
        if started is None:
            return _pid_exists(self.pid)
        return self.pid_started is None or started == self.pid_started

    def describe(self) -> str:
        return f"{self.command!r}, pid {self.pid} on {self.host}, since {self.since}"


def _started(pid: int) -> int | None:
    """Start time of ``pid`` (field 22 of /proc/PID/stat), None when the process or /proc is absent."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> Holder | None:
    """The lock's holder, None when the file is gone or unreadable (half-written by a driver killed mid-write)."""
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def stale_reason(path: Path, holder: Holder | None, *, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why the lock at ``path`` no longer protects a live driver, or None while its holder is alive."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it is gone"
    if holder is None:
        return f"it is unreadable and its heartbeat is {age:.0f} s old" if age > stale_after else None
    if holder.alive_here() is False:
        return f"its holder ({holder.describe()}) is no longer running"
    if age > stale_after:
        return f"its holder ({holder.describe()}) has not refreshed it for {age:.0f} s (> {stale_after:.0f} s)"
    return None


class ExperimentLock:
    """The lock of one experiment's storage folder, held between :meth:`acquire` and :meth:`release`."""

    def __init__(self, folder: Path, what: str, *, heartbeat: float = HEARTBEAT_S,
                 stale_after: float = STALE_AFTER_S) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.what = what
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.me = Holder.me()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        """Create the lock file with our holder record; False when it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(self.me)))
        return True

    def _take_over(self, holder: Holder | None) -> bool:
        """Move a stale lock aside; False when another driver replaced it meanwhile (then it is not stale)."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{self.me.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else removed it: try to create ours
        moved = read_holder(aside)
        if holder is not None and (moved is None or moved.token != holder.token):
            # A fresh lock replaced the stale one between our look and the rename: put it back untouched.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def acquire(self) -> None:
        """Take the lock now or raise :class:`LockHeld`; a stale lock is taken over with a warning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return
            holder = read_holder(self.path)
            reason = stale_reason(self.path, holder, stale_after=self.stale_after)
            if reason is None:
                raise LockHeld(self._refusal(holder))
            if self._take_over(holder):
                print(f"warning: taking over the lock {self.path} of {self.what}: {reason}", file=sys.stderr,
                      flush=True)
        raise LockHeld(self._refusal(read_holder(self.path)))

    def _refusal(self, holder: Holder | None) -> str:
        who = holder.describe() if holder is not None else "a driver that has not finished writing it"
        return (
            f"{self.what} is already running: {self.path} is held by {who}. Only one driver may run an "
            f"experiment at a time (two would train every trial twice into the same MLflow runs and Train "
            f"folders). Wait for it to end, or stop it (Ctrl-C, or `kill {holder.pid if holder else 'PID'}` on "
            f"{holder.host if holder else 'its host'}) and continue with `sfh resume`. A lock whose driver died is "
            f"taken over by the next command: on its own host at once, elsewhere after {self.stale_after:.0f} s "
            f"without a heartbeat."
        )

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    print(f"warning: the lock {self.path} was removed while {self.what} runs", file=sys.stderr)
                    return
                except OSError:
                    continue  # a shared filesystem that hiccups: the next beat tries again

        self._thread = threading.Thread(target=beat, name="sfh-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.me.token:
            self.path.unlink(missing_ok=True)


@contextmanager
def hold(storage: str, name: str, what: str) -> Iterator[ExperimentLock | None]:
    """Hold the lock of experiment ``name`` under ``storage`` for the block (``what`` names it in messages).

    ``storage`` is a folder (or ``file://`` URI); on an object store nothing is locked (said on stderr).
    """
    if "://" in storage and not storage.startswith("file://"):
        print(f"warning: {storage} is an object store, which has no exclusive create: {what} runs without a "
              "lock, so make sure no other driver runs it (or use a mounted shared filesystem)", file=sys.stderr)
        yield None
        return
    lock = ExperimentLock(Path(storage.removeprefix("file://")) / name, what)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
