"""One failure, one line: what happened and what to do next, with the traceback in a log file.

A command that fails for a reason the harness did not foresee would otherwise end in a traceback (Ray's, Tune's,
MLflow's), often with terminal colour codes, where the user needs the cause and the next command. The CLI
hands any such error to :func:`one_line`, which writes the traceback to ``runs/logs/`` and says in one line
what happened (out of memory, a full disk at which path, a state file cut short, the store's refusal) and the
next step. Text saved anywhere (tags, logs) goes through :func:`plain` first: no ANSI codes.
"""

from __future__ import annotations

import errno
import os
import re
import time
import traceback
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_DIR = Path("runs/logs")


def plain(text: str) -> str:
    """``text`` without terminal escape codes (colours, cursor moves)."""
    return _ANSI.sub("", text)


def first_line(err: BaseException) -> str:
    lines = [plain(line).strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def diagnose(err: BaseException, again: str) -> str:
    """What happened, in words, and the next step; ``again`` is the command that continues (e.g. ``sfh resume
    NAME``)."""
    for cause in _chain(err):
        text = plain(str(cause))
        if isinstance(cause, MemoryError) or "running low on memory" in text or "OutOfMemory" in type(cause).__name__:
            detail = next((line.strip() for line in text.splitlines() if "memory" in line.lower()), first_line(cause))
            return (f"out of memory: {detail[:300]}; use a smaller data.batch_size (or fewer trials at once, "
                    f"--max-concurrent), then {again}")
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            where = cause.filename or "the storage or the tracking store"
            return f"disk full at {where}: free space there, then {again}"
        if isinstance(cause, EOFError):
            return (f"a state file was empty or cut short ({first_line(cause)}), which a full disk or a killed "
                    f"writer leaves: check free space, then {again}")
    return f"{type(err).__name__}: {first_line(err)[:300]}; once the cause is fixed, {again}"


def write_log(err: BaseException, command: str, log_dir: Path = LOG_DIR) -> Path | None:
    """The error's full traceback (colour codes removed) in ``log_dir``; None when it cannot be written."""
    path = log_dir / f"sfh-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(plain("".join(traceback.format_exception(err))))
    except OSError:
        return None
    return path.resolve()


def one_line(err: BaseException, command: str, again: str) -> str:
    """The line a failed command prints: its diagnosis, the next step and where the traceback is."""
    log = write_log(err, command)
    where = f" (traceback: {log})" if log is not None else ""
    return f"sfh {command}: failed: {diagnose(err, again)}{where}"
