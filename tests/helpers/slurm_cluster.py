"""A real one-node Slurm cluster for tests: Debian's slurm-wlm daemons (slurmctld, slurmd) and munge, installed
when missing and configured in one folder of the test's own, on loopback, run as this user.

Every daemon runs from ``folder`` (state, spool, logs; the munge socket and key in a folder of their own under
/tmp, removed at the end) and is stopped by the pid in its pid file: nothing else is touched, and another Slurm
on the machine is left alone. The cluster's commands (sbatch, scontrol, ...) find it through ``SLURM_CONF``
(:meth:`LocalSlurm.env`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers.ray_nodes import free_port, wait_for

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch")
#: The node's name and address in slurm.conf.
NODE = "localhost"


def install() -> None:
    """Debian's Slurm and munge packages, when a daemon is missing; a clear error when they cannot be installed."""
    if all(Path(d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        raise RuntimeError(f"Slurm is not installed and this user cannot install it: apt-get install "
                           f"{' '.join(PACKAGES)}")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run([*sudo, *command], env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


class LocalSlurm:
    """slurmctld + one slurmd (node ``localhost``, ``cpus`` CPUs) + munged, all under ``folder``."""

    def __init__(self, folder: Path, *, cpus: int = 2, kill_wait_s: int = 30) -> None:
        self.folder = folder
        self.kill_wait_s = kill_wait_s
        self.conf = folder / "etc" / "slurm.conf"
        for sub in ("etc", "state", "spool", "log", "run"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # munged wants every folder above its socket searchable by all (pytest's are private): its own under /tmp.
        self.munge = munge = Path(tempfile.mkdtemp(prefix="sfh-munge-"))
        munge.chmod(0o711)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.socket = munge / "munge.socket"
        user = _user()
        memory = _real_memory()
        self.conf.write_text("\n".join([
            "ClusterName=sfhtest", f"SlurmctldHost={NODE}", f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}", f"SlurmUser={user}", f"SlurmdUser={user}",
            "AuthType=auth/munge", "CredType=cred/munge",
            # cred_expire 5: a requeued job waits ~7 s before it may start again (the default 120 makes it ~157 s).
            f"AuthInfo=socket={self.socket},cred_expire=5",
            f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}/%n",
            f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
            "MailProg=/bin/true", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SchedulerParameters=sched_interval=2,bf_interval=2", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "JobRequeue=1", "MinJobAge=600", f"KillWait={kill_wait_s}",
            "ReturnToService=2",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName=test Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        self._start(["/usr/sbin/munged", f"--key-file={key}", f"--socket={self.socket}",
                     f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}",
                     f"--log-file={munge / 'munged.log'}"])
        self.pid_files = [munge / "munged.pid"]
        self._start(["/usr/sbin/slurmctld", "-f", str(self.conf)])
        self._start(["/usr/sbin/slurmd", "-f", str(self.conf), "-N", NODE])
        self.pid_files += [folder / "run" / "slurmctld.pid", folder / "run" / "slurmd.pid"]
        wait_for(self._idle, 60, f"the Slurm node to be idle (logs in {folder / 'log'})", every=1.0)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        fields = self.run("scontrol", "show", "job", "-o", job_id).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def _start(self, command: list[str]) -> None:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{command[0]} did not start ({done.returncode}): {done.stderr.strip()}")

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True)
        return done.stdout.strip() == "idle"

    def stop(self) -> None:
        """Every job cancelled and waited for, then each daemon by its pid (SIGTERM, SIGKILL after 10 s), then any
        job step daemon (slurmstepd) of this cluster still left."""
        subprocess.run(["scancel", "--user", _user()], env=self.env(), capture_output=True, timeout=60)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not self.run("squeue", "-h").strip(), self.kill_wait_s + 30, "the jobs to end", every=1)
        for pid_file in reversed(self.pid_files):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.2)
        for stepd in Path("/proc").glob("[0-9]*/cwd"):
            with contextlib.suppress(OSError):
                if Path(os.readlink(stepd)).is_relative_to(self.folder):
                    os.kill(int(stepd.parent.name), signal.SIGKILL)
        shutil.rmtree(self.munge, ignore_errors=True)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _real_memory() -> int:
    """The node's memory in MiB as slurmd counts it (a node declaring more is drained)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 256
    return 1024
