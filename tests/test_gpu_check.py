"""``make gpu-check`` in its CPU form (``bench/gpu_check.py --cpu``: every check at tiny sizes), so the GPU
acceptance script cannot rot on a project whose CI has no GPU; and its refusal without one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.ray_nodes import RayNode

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"



@pytest.mark.ray
def test_cpu_form_passes_every_check(ray_head: RayNode, tmp_path: Path) -> None:
    """Its Ray checks join the session's head (a private local Ray is the end-to-end demo test's)."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(tmp_path), "--address", ray_head.address],
                          env=ray_head.driver_env(), capture_output=True, text=True, timeout=900)
    report = json.loads((tmp_path / "report.json").read_text())
    failed = {name: check for name, check in report["checks"].items() if not check["ok"]}
    assert done.returncode == 0, json.dumps(failed, indent=1)[-6000:] + done.stdout + done.stderr[-3000:]
    checks = report["checks"]
    assert list(checks) == ["lif_exactness", "amp_steps", "bench", "kill_resume", "energy", "plan"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["lif_exactness"]["cases"] == 4 * 4 * 2 + 2 * 4
    assert checks["lif_exactness"]["max_fp32_grad_rel_error"] <= 1e-6
    after = checks["kill_resume"]["epochs_after_resume"]  # on from a checkpoint, each later epoch once
    assert after == list(range(after[0], 3)) and after[0] >= 1 and checks["kill_resume"]["resumed_from"]
    assert checks["plan"]["step_s"] > 0 and checks["plan"]["energy_basis"].startswith("n/a")
    assert "| kill_resume | pass |" in (tmp_path / "report.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_a_gpu_it_says_so_and_fails(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "no CUDA device here" in done.stderr
    assert not (tmp_path / "report.json").exists()
