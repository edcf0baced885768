"""The Triton LIF kernels, verified on this CPU under Triton's interpreter (``tests/helpers/lif_triton_interpret.py``).

A fresh interpreter, since ``TRITON_INTERPRET`` is read when triton is first imported (spikingjelly imports it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("helpers") / "lif_triton_interpret.py"


def test_triton_kernels_match_spikingjelly_in_interpreter() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 19 and all(line.startswith("ok ") for line in lines), done.stdout
