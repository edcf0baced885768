"""Joining Ray: a given cluster, or a private local one on a loopback node address (Ray still opens some ports
on every interface: docs/reliability.md).

Ray rewrites ``127.0.0.1``/``localhost`` to the machine's outward address, but keeps other loopback
addresses; a local run therefore lives on 127.0.0.2, which Ray leaves as it is.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import ray

LOCAL_NODE_IP = "127.0.0.2"
#: How long joining a given ``--address`` may take before the command gives up.
CONNECT_TIMEOUT_S = 30.0
#: Trial drivers and Train controllers only wait; one logical CPU on top of the cores holds them all.
DRIVER_SLACK_CPUS = 1


def quiet() -> None:
    """Our progress lines replace Tune's tables and box (``RAY_AIR_NEW_OUTPUT=0`` + ``verbose=0``), and Ray's
    start-up notes go."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # Ray's note that a new local cluster runs with token auth (its default, which the private local Ray keeps).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def connect(address: str | None = None, *, log_to_driver: bool = False) -> str:
    """Join ``address`` (``host:port`` of a running head), else start a private local Ray on loopback.

    Workers' stdout is not forwarded unless ``log_to_driver`` (errors still reach the driver through Tune).
    Every worker of the job gets ``RAY_ADDRESS`` (so the local GCS port is chosen here): Ray Train's
    placement-group cleaner looks its cluster up by it, and on a machine running several Ray instances it
    otherwise asks another one, never removing the worker group of a trial that Tune stopped (ASHA).
    Returns a one-line description of the cluster.
    """
    quiet()
    if not ray.is_initialized():
        if address:
            check_reachable(address)
            ray.init(
                address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING,
                runtime_env={"env_vars": {"RAY_ADDRESS": address}},
            )
        else:
            port = _free_port(LOCAL_NODE_IP)
            users = os.environ.get("RAY_GCS_SERVER_PORT")
            os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # read by ray.init when it starts the local head
            try:
                ray.init(
                    address="local",  # a new instance, even when `ray start` left a cluster to auto-join here
                    num_cpus=(os.cpu_count() or 1) + DRIVER_SLACK_CPUS,
                    _node_ip_address=LOCAL_NODE_IP,
                    log_to_driver=log_to_driver,
                    logging_level=logging.WARNING,
                    runtime_env={"env_vars": {"RAY_ADDRESS": f"{LOCAL_NODE_IP}:{port}"}},
                )
            finally:  # the user's own setting, if any, is theirs again
                if users is None:
                    del os.environ["RAY_GCS_SERVER_PORT"]
                else:
                    os.environ["RAY_GCS_SERVER_PORT"] = users
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    where = address or f"local at {LOCAL_NODE_IP}"
    return f"Ray {where}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when nothing listens at ``address`` (``ray.init`` would wait forever).

    Tries a TCP connection once a second, so a head that is still starting is waited for; ``auto`` and
    addresses that are not ``host:port`` are left to Ray.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"--address {address}: no Ray head answers there after {timeout:.0f} s ({err}); check the "
                    f"address and port (`ray status` on the head prints them) and that this machine can reach it"
                ) from None
        time.sleep(1.0)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def gpus_available() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def check_fits(need: dict[str, float], what: str) -> None:
    """Fail now, rather than wait forever in PENDING, when one trial needs more than the whole cluster."""
    total = ray.cluster_resources()
    short = {k: (v, total.get(k, 0.0)) for k, v in need.items() if v > total.get(k, 0.0) + 1e-9}
    if short:
        detail = ", ".join(f"{k}: needs {v:g}, cluster has {have:g}" for k, (v, have) in short.items())
        raise ValueError(f"{what} cannot be scheduled ({detail}); lower its resources or use --smoke")


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def wait_for_nodes(address: str, count: int, timeout: float) -> str:
    """Join ``address`` and wait until ``count`` nodes are alive (a cluster that starts on several machines at
    once); a ``TimeoutError`` names how many joined. Returns the one-line description of the cluster."""
    check_reachable(address, timeout)
    deadline = time.monotonic() + timeout
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        while (alive := sum(n["Alive"] for n in ray.nodes())) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray at {address}: {alive} of {count} node(s) joined within {timeout:.0f} s")
            time.sleep(1.0)
        total = ray.cluster_resources()
        return f"Ray at {address}: {alive} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU"
    finally:
        shutdown()
