"""``make bench``: run every ``bench/bench_*.py`` and write one JSON + markdown report.

Each bench module defines ``run() -> list[dict]``; a dict is one measured figure with at least
``name``, ``value`` and ``unit`` (and any context: device, batch, model, ...). Speed and memory
targets live here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench", help="report folder (default runs/bench)")
    parser.add_argument("--only", nargs="*", help="bench module names to run, e.g. bench_models")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH_DIR.parent))
    rows: list[dict] = []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        if args.only and path.stem not in args.only:
            continue
        print(f"== {path.stem}", flush=True)
        for row in load(path).run():
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
