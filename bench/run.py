"""``make bench``: run every ``bench/bench_*.py`` and write one JSON + markdown report.

Each bench module defines ``run() -> list[dict]``; a dict is one measured figure with at least
``name``, ``value`` and ``unit`` (and any context: device, batch, model, ...). Speed and memory
targets live here, never in timed unit tests. Every module runs in a fresh interpreter, so a CPU peak
memory (the process's peak resident set) is that module's own, not the largest of the modules before it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent


def run_module(path: Path, out: Path) -> None:
    """In this (fresh) interpreter: run one bench module and write its rows to ``out`` as JSON."""
    sys.path.insert(0, str(BENCH_DIR.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out.write_text(json.dumps(module.run()))


def measure(path: Path) -> list[dict]:
    """The rows of one bench module, measured in a child interpreter."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "rows.json"
        subprocess.run([sys.executable, __file__, "--child", str(path), str(out)], check=True)
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench", help="report folder (default runs/bench)")
    parser.add_argument("--only", nargs="*", help="bench module names to run, e.g. bench_models")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("MODULE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_module(*args.child)
        return 0
    rows: list[dict] = []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        if args.only and path.stem not in args.only:
            continue
        print(f"== {path.stem}", flush=True)
        for row in measure(path):
            row = {"bench": path.stem, **row}
            print(f"   {row['name']}: {row['value']:.4g} {row['unit']}", flush=True)
            rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    (out / "report.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    lines = ["| bench | name | value | unit |", "|---|---|---|---|"]
    lines += [f"| {r['bench']} | {r['name']} | {r['value']:.4g} | {r['unit']} |" for r in rows]
    (out / "report.md").write_text(f"# Benchmarks ({meta['time']}, {meta})\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
