"""How long ``sfh`` takes to answer before it does anything: ``--help``, a command's ``--help``, a typo.

Each is a fresh process, as a user starts it (median of a few, the first one discarded: it warms the file
cache). The target is under a second: the parser imports no Ray, MLflow or torch; a command imports them when
it runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

SFH = Path(sys.executable).with_name("sfh")
CASES = {
    "sfh --help": ["--help"],
    "sfh reproduce --help": ["reproduce", "--help"],
    "sfh plan --help": ["plan", "--help"],
    "sfh energy --help": ["energy", "--help"],
    "sfh reprodcue (a typo)": ["reprodcue"],
}
ROUNDS = 5


def seconds(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run([str(SFH), *argv], capture_output=True, check=False)
    return time.perf_counter() - began


def run() -> list[dict]:
    rows = []
    for name, argv in CASES.items():
        seconds(argv)  # warm-up
        median = statistics.median(seconds(argv) for _ in range(ROUNDS))
        rows.append({"name": f"{name}: time to answer", "value": median, "unit": "s", "target": "< 1 s",
                     "rounds": ROUNDS})
    return rows
