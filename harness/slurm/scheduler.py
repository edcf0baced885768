"""Slurm's own commands, called as a user would: ``sbatch``, ``scontrol``, ``scancel``. No accounting database
is assumed (``sacct`` is often unavailable), so a job is known only while ``scontrol`` remembers it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

#: Jobs in these states may still run again: a new submit of the same chain would race with them.
ALIVE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "SUSPENDED",
         "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED")
_FIELD = re.compile(r"(\w+)=(\S*)")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(f"{command[0]} not found: run this on a Slurm login node (Slurm's client commands "
                                "on PATH)")
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def submit(script: Path) -> str:
    """Queue ``script``; its job id."""
    done = _run("sbatch", "--parsable", str(script))
    if done.returncode:
        raise ValueError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def job(job_id: str) -> dict[str, str] | None:
    """``scontrol show job``'s fields of a job (JobState, Restarts, RunTime, TimeLimit, NodeList, Reason, ...),
    None once Slurm has forgotten it."""
    done = _run("scontrol", "show", "job", "-o", job_id)
    if done.returncode or not done.stdout.strip():
        return None
    return dict(_FIELD.findall(done.stdout))


def cancel(job_id: str) -> bool:
    """End a job (SIGTERM, then SIGKILL after the site's KillWait); False when Slurm no longer knows it."""
    return _run("scancel", job_id).returncode == 0
