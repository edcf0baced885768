"""Extract the upstream Spikingformer energy logs into the project's data files (``upstream_energy/*.json``).

The upstream repository ships the output of its energy script for the released ImageNet 8-512 and 8-768
checkpoints. The project does not ship those logs; it keeps the figures they print, each file with its provenance
(repository, commit, path, sha256 of the log), so the energy tests and the report compare against the authors'
numbers from the repository alone. Run once, from a clone of the upstream repository at the pinned commit::

    python reference/extract_energy.py --upstream PATH/Spikingformer

A log whose sha256 differs from the pinned one is refused: the data must come from the published file.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = "zhouchenlin2096/Spikingformer"
COMMIT = "4378623b82bb1999b137244950ad648566e148fd"
#: data file (our model name) -> (path in the upstream repository, sha256 of that file at COMMIT)
LOGS = {
    "spikingformer_8_512": (
        "imagenet/energy_consumption_logs/energy_consumption_of_Spikingformer-8-512_log.txt",
        "82ee2160db86dd48134a89e9525e1b44f65603abe71e8e74ded9be8c35cc8ac9",
    ),
    "spikingformer_8_768": (
        "imagenet/energy_consumption_logs/energy_consumption_of_Spikingformer-8-768_log.txt",
        "907780be73442c1c899e0fe7a2677d2efa6c82ff09920cc04d5a2d073d5ab784",
    ),
}

# One counted layer: ('name', Kind(...), array([dense ops, ACs, MACs, input firing rate in %]))
_LAYER = re.compile(r"^\('(?P<name>[^']+)', (?P<kind>\w+)\(.*\), array\(\[(?P<values>[^\]]+)\]\)\)$")
_TOTALS = re.compile(r"^Number of operations: (?P<macs>[\d.e+-]+) G MACs, (?P<acs>[\d.e+-]+) G ACs")
_ENERGY = re.compile(r"^Energy consumption: (?P<mj>[\d.e+-]+) mJ")


def parse(text: str) -> dict:
    """The per-layer table, the attention settings, the per-block Q/K/V input rates and the printed totals."""
    lines = [line.strip() for line in text.splitlines()]
    layers = []
    for line in lines:
        if match := _LAYER.match(line):
            dense, acs, macs, rate = (float(v) for v in match["values"].split(","))
            layers.append({"name": match["name"], "kind": match["kind"], "dense_ops": dense, "ac_ops": acs,
                           "mac_ops": macs, "rate_percent": rate})
    following = {line: lines[i + 1] for i, line in enumerate(lines[:-1])}
    totals = next((m for line in lines if (m := _TOTALS.match(line))), None)
    energy = next((m for line in lines if (m := _ENERGY.match(line))), None)
    if not layers or totals is None or energy is None or "SSA info:" not in following:
        raise ValueError("not an upstream energy log: per-layer tuples, SSA info or totals missing")
    return {
        "layers": layers,
        "ssa_info": ast.literal_eval(following["SSA info:"]),
        "qkv_rates": ast.literal_eval(following["Firing rate of Q/K/V inputs in each block:"]),
        "macs_G": float(totals["macs"]),
        "acs_G": float(totals["acs"]),
        "energy_mJ": float(energy["mj"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, required=True, help=f"a clone of {REPOSITORY} at {COMMIT[:8]}")
    parser.add_argument("--out", type=Path, default=HERE / "upstream_energy", help="where the JSON files go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (path, pinned) in LOGS.items():
        data = (args.upstream / path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != pinned:
            raise SystemExit(f"{args.upstream / path}: sha256 {digest}, expected {pinned} ({REPOSITORY} at {COMMIT})")
        record = {"source": {"repository": REPOSITORY, "commit": COMMIT, "path": path, "sha256": digest,
                             "extractor": "reference/extract_energy.py"},
                  **parse(data.decode(errors="replace"))}
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"{name}: {len(record['layers'])} layers, {record['energy_mJ']:.4f} mJ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
