"""An ``sfh`` command run as a cluster user runs it: its own process group, its output in a log file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SFH = Path(sys.executable).parent / "sfh"


class Driver:
    """``sfh *args`` in the background for the length of a ``with`` block; still running at its end, it is
    killed (what a test failing half-way must not leave behind). ``proc`` is the process, ``out()`` its log."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = [str(SFH), *map(str, args)]
        self.log = log
        self.env = env

    def __enter__(self) -> subprocess.Popen:
        self._file = self.log.open("w")
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=self._file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._file.close()

    def out(self) -> str:
        return self.log.read_text()
