"""Real Ray nodes for tests: ``ray start --block`` on a loopback address, each in its own process group.

A node is its ``ray start`` process group plus every process it spawned (workers start sessions of their own);
stopping it ends exactly this node and nothing else running Ray on the machine, where ``ray stop`` would end
every Ray instance of the user.
Clusters started here use token authentication (``RAY_AUTH_MODE=token``, the ``~/.ray/auth_token`` that Ray
keeps): drivers that join them with an explicit address need the same variable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

RAY = Path(sys.executable).parent / "ray"
#: The session head's logical CPUs: more than the cores, so trials overlap their start-up waits. Its address is
#: :func:`session_head_ip` (127.0.0.2 is the private local Ray's, 127.0.0.3 a test cluster's worker, 127.0.0.9 the
#: Slurm chain's).
SESSION_HEAD_CPUS = 6
#: Every process of a test cluster and every driver joining it.
ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}

T = TypeVar("T")

#: A driver that reserves CPUs of one node (a placement group) until its stdin closes.
_HOLD = """
import sys, ray
from ray.util.placement_group import placement_group
ray.init(address=sys.argv[1], log_to_driver=False)
node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == sys.argv[2])
pg = placement_group([{"CPU": float(sys.argv[3])}], strategy="STRICT_PACK",
                     bundle_label_selector=[{"ray.io/node-id": node}])
ray.get(pg.ready(), timeout=120)
print("held", flush=True)
sys.stdin.read()
"""
#: Tests that start the private local Ray (127.0.0.2) carry this xdist group: under ``pytest -n`` one worker runs
#: them all, one at a time.
PRIVATE_LOCAL_RAY = pytest.mark.xdist_group("private-local-ray")


def session_head_ip(worker: str) -> str:
    """The session head's address for xdist worker ``worker``: each has its own head under ``pytest -n N``,
    ``gw0`` on 127.0.4.1, ``gw1`` on 127.0.4.2, ... (``master``, without -n, on 127.0.4.1)."""
    index = int(worker[2:]) if worker.startswith("gw") else 0
    return f"127.0.4.{index + 1}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``root`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            found[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo += children.get(pid, [])
    return found


class RayNode:
    """One node: the head when ``head_address`` is None (it then picks its port), else a worker joining it."""

    def __init__(self, ip: str, *, num_cpus: int, log: Path, head_address: str | None = None,
                 temp_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.ip = ip
        args = [str(RAY), "start", "--block", f"--node-ip-address={ip}", f"--num-cpus={num_cpus}",
                "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}"]
        if head_address is None:
            self.address = f"{ip}:{free_port(ip)}"
            args += ["--head", f"--port={self.address.split(':')[1]}", f"--dashboard-port={free_port()}",
                     f"--ray-client-server-port={free_port(ip)}"]
            if temp_dir is not None:
                args.append(f"--temp-dir={temp_dir}")
        else:
            self.address = head_address
            args.append(f"--address={head_address}")
        self.log = log
        self.env = {**ENV, **(env or {})}
        with log.open("w") as out:
            self.proc = subprocess.Popen(args, env=self.driver_env(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.proc.poll() is not None or "Ray runtime started" in log.read_text(), 180,
                 f"the Ray node on {ip}")
        assert self.proc.poll() is None, log.read_text()

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver joining this node: its ``RAY_AUTH_MODE``. A driver in another mode than
        the cluster's fails at random: the GCS's calls to it are refused, so the GCS takes it for dead and
        cancels the actors it owns (seen: a Tune trial "cancelled before it started running")."""
        return {**os.environ, **self.env}

    def pids(self, title: str) -> list[int]:
        """Pids of this node's processes whose command line contains ``title``."""
        return sorted(pid for pid, cmdline in descendants(self.proc.pid).items() if title in cmdline)

    @contextmanager
    def hold(self, cpus: float) -> Iterator[None]:
        """Keep ``cpus`` of this node's CPUs taken (so Ray schedules elsewhere) inside the block.

        The holder is a separate driver: joining a token-authenticated cluster needs ``RAY_AUTH_MODE`` set
        before Ray is imported, which a test process cannot promise.
        """
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, self.address, self.ip, str(cpus)],
                                  env=self.driver_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held", f"could not hold {cpus} CPUs on {self.ip}"
            yield
        finally:
            holder.stdin.close()  # the driver exits; Ray removes its placement group
            holder.wait(timeout=60)

    def kill_raylet(self) -> None:
        """The node fails: its raylet dies at once (its workers follow)."""
        [raylet] = self.pids("/raylet/raylet ")
        os.kill(raylet, signal.SIGKILL)

    def stop(self) -> None:
        """End this node: its ``ray start`` group, gracefully then by force, and every process it spawned
        (Ray's workers start sessions of their own, outside the group)."""
        spawned = self.pids("")
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for pid in spawned:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
