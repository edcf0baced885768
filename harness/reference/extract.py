"""Turn the authors' published logs into this repository's reference data (run once, by hand, when a log is added).

``python -m harness.reference.extract LOGS_FOLDER`` reads ``experiments/reference/SOURCES.yaml``, finds each log
it lists anywhere under ``LOGS_FOLDER`` by its sha256 (so the files may carry any names), parses it with the
project's parser for its format (:mod:`harness.reference.logs`) and writes ``experiments/reference/<name>.json``:
per epoch the test top-1 and the test and training losses, the source, and the dataset's tolerance band.

The band, per dataset (the largest over that dataset's curves, rounded up to 0.1 point), is

    3 x sigma_eval  +  |paper top-1 - the log's best top-1|

``sigma_eval`` is the spread of one evaluation: the larger of the curve's epoch-to-epoch scatter (the RMS of
top-1 about its centred 5-epoch median over the second half of the schedule, where the curve is flat) and the
binomial sampling spread of a test set of that size at the run's best accuracy; the second term is how far the
published figure sits from the authors' own run (seed and selection spread that the published numbers allow).
The paper top-1 is read from the rows that name the curve in ``experiments/*.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from harness.reference.curves import REFERENCE_DIR, SOURCES, ReferenceCurve, Source
from harness.reference.logs import PARSERS, Curve, parse_energy_log


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_logs(folder: Path, wanted: set[str]) -> dict[str, Path]:
    """The files under ``folder`` whose sha256 is in ``wanted``, by hash."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = sha256(path)
        if digest in wanted:
            found.setdefault(digest, path)
    return found


def paper_top1(name: str, experiments: Path) -> list[float]:
    """The paper top-1 of every row attached to curve ``name`` in the experiment files."""
    out = []
    for path in sorted(experiments.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        for row in data.get("rows", []) if isinstance(data, dict) else []:
            if isinstance(row, dict) and row.get("reference_curve") == name:
                top1 = (row.get("paper") or {}).get("top1")
                if top1 is not None:
                    out.append(float(top1))
    return out


def eval_spread(curve: Curve, test_images: int) -> tuple[float, float, float]:
    """(sigma_eval, scatter, binomial) in points: see the module's docstring."""
    top1 = [e.top1 for e in curve.epochs]
    half = top1[len(top1) // 2 :]
    residuals = [half[i] - statistics.median(half[max(0, i - 2) : i + 3]) for i in range(len(half))]
    scatter = math.sqrt(statistics.fmean(r * r for r in residuals))
    p = curve.best.top1 / 100
    binomial = 100 * math.sqrt(p * (1 - p) / test_images)
    return max(scatter, binomial), scatter, binomial


def extract(logs: Path, out: Path = REFERENCE_DIR) -> list[Path]:
    """Write every data file ``out/SOURCES.yaml`` lists from the logs under ``logs``; returns the files written."""
    manifest = yaml.safe_load((out / SOURCES).read_text())
    entries = {**manifest.get("curves", {}), **{f"{k}.energy": v for k, v in manifest.get("energy", {}).items()}}
    found = find_logs(logs, {e["source"]["sha256"] for e in entries.values()})
    missing = [f"{k} ({e['source']['path']})" for k, e in entries.items() if e["source"]["sha256"] not in found]
    if missing:
        raise FileNotFoundError(f"{logs}: no file with the sha256 of {', '.join(missing)}")
    written = []
    for name, entry in manifest.get("energy", {}).items():
        log = parse_energy_log(found[entry["source"]["sha256"]].read_text(errors="replace"))
        written.append(_write(out / f"{name}.energy.json", {"source": entry["source"], **asdict(log)}))
    parsed = {name: PARSERS[e["format"]](found[e["source"]["sha256"]].read_text(errors="replace"), name)
              for name, e in manifest.get("curves", {}).items()}
    bands: dict[str, list[tuple[float, str]]] = {}
    for name, entry in manifest.get("curves", {}).items():
        curve = parsed[name]
        sigma, scatter, binomial = eval_spread(curve, entry["test_images"])
        papers = paper_top1(name, out.parent)
        published = max((abs(p - curve.best.top1) for p in papers), default=0.0)
        band = 3 * sigma + published
        why = (f"{name}: 3 x {sigma:.3f} (scatter {scatter:.3f}, binomial {binomial:.3f} at {curve.best.top1:.2f} % "
               f"of {entry['test_images']}) + |paper {papers[0] if papers else 'none'} - log best "
               f"{curve.best.top1:.3f}| {published:.3f} = {band:.3f}")
        bands.setdefault(entry["dataset"], []).append((band, why))
    for name, entry in manifest.get("curves", {}).items():
        curve = parsed[name]
        dataset = bands[entry["dataset"]]
        band = math.ceil(max(b for b, _ in dataset) * 10 - 1e-9) / 10
        lr = [e.lr for e in curve.epochs]
        reference = ReferenceCurve(
            name=name, label=entry["label"], dataset=entry["dataset"],
            epochs=tuple(e.epoch for e in curve.epochs), top1=tuple(e.top1 for e in curve.epochs),
            eval_loss=tuple(e.eval_loss for e in curve.epochs), train_loss=tuple(e.train_loss for e in curve.epochs),
            warmup_epochs=lr.index(max(lr)), band_pp=band,
            band_derivation=f"{entry['dataset']} band {band} pp, the largest of: " + "; ".join(w for _, w in dataset),
            source=Source(**{k: str(v) for k, v in entry["source"].items()}), notes=entry.get("notes", ""),
        )
        written.append(_write_text(out / f"{name}.json", reference.to_json()))
    return written


def _write(path: Path, data: dict[str, Any]) -> Path:
    return _write_text(path, json.dumps(data, indent=1) + "\n")


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.reference.extract", description=__doc__.split("\n")[0])
    parser.add_argument("logs", type=Path, help="a folder holding the published logs (any names, any depth)")
    args = parser.parse_args(argv)
    try:
        for path in extract(args.logs):
            print(path)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
