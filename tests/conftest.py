"""Shared test fixtures: what several test modules need and should not each start again.

``ray_head`` is one Ray head on loopback for the whole session; ``mlflow_server`` a real ``mlflow server`` on
127.0.0.1 with sqlite behind it. A test that needs its own cluster (node loss, the private local Ray) starts it
itself. Every Ray of the session, and every driver, runs Ray's token auth: a process that once started a private
local Ray (token auth, Ray's default) stays in that mode, so one mode for all is what lets in-process drivers of
any test join any cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.ray_nodes import ENV as RAY_ENV
from helpers.ray_nodes import SESSION_HEAD_CPUS, RayNode, free_port, session_head_ip
from helpers.serving import wait_until_serving

from harness.cli import TELEMETRY_OFF


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported (Ray reads its auth mode when it is imported), for every in-process use
    and every subprocess a test starts: Ray usage stats and MLflow telemetry off (nothing leaves loopback), and
    Ray's token auth (see above), with the token Ray keeps for the user made on a machine that has none yet."""
    os.environ.update({**TELEMETRY_OFF, **RAY_ENV})
    # Under pytest -n N, N processes share the cores: each (and what it starts) computes on its share of them
    # instead of every one spreading its torch threads over all of them.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        torch.set_num_threads(threads)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"], check=True,
                   capture_output=True)


#: What a test needs, slowest first (pyproject.toml's markers): the order tests start in.
_NEEDS_ORDER = {"slurm": 0, "ray": 1, "train": 2, "browser": 2, "compile": 2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with the slowest kinds of test first (Slurm, then Ray, then training, browsers, compilers), each
    module kept whole and in file order (its module-scoped fixtures are made once): under ``pytest -n`` the long
    end-to-end tests start at once, beside the short ones, instead of last."""
    def needs(item: pytest.Item) -> int:
        return min((_NEEDS_ORDER[m.name] for m in item.iter_markers() if m.name in _NEEDS_ORDER), default=3)

    rank: dict[str, int] = {}
    for item in items:
        rank[item.module.__name__] = min(rank.get(item.module.__name__, 3), needs(item))
    items.sort(key=lambda item: rank[item.module.__name__])


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayNode]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    node = RayNode(session_head_ip(worker), num_cpus=SESSION_HEAD_CPUS, log=tmp_path_factory.mktemp("ray") / "head.log")
    yield node
    node.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback, sqlite behind it, artifacts proxied; its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
         str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health", 120, "the MLflow server")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
