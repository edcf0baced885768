"""``sfh slurm status``: a chain as its user needs it: its jobs as Slurm has them, what its jobs did, each
(row, seed)'s epochs, and what the next job will do (or why the chain stopped)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.slurm import scheduler
from harness.slurm.chain import Chain, folder, next_step, progress

#: Events shown (the newest); the whole history stays in events.log.
EVENTS_SHOWN = 12


def report(chain: Chain) -> str:
    lines = [f"chain {chain.name} ({chain.experiment_file}); script {chain.script}"]
    for job in chain.jobs:
        info = scheduler.job(job)
        if info is None:
            lines.append(f"  job {job}: no longer known to Slurm (ended; its events below)")
            continue
        lines.append(f"  job {job}: {info.get('JobState', '?')}, requeued {info.get('Restarts', '0')} time(s), "
                     f"run time {info.get('RunTime', '?')} of {info.get('TimeLimit', '?')}, "
                     f"nodes {info.get('NodeList', '?')}, reason {info.get('Reason', '?')}")
    events = chain.event_lines()
    lines.append(f"events ({len(events)}, the last {min(len(events), EVENTS_SHOWN)}; all in {chain.events}):")
    lines += [f"  {line}" for line in events[-EVENTS_SHOWN:]]
    rows = progress(chain)
    lines.append("runs:")
    for row in rows:
        failure = f"  {row.kind}: {row.failure}" if row.failure else ""
        lines.append(f"  {row.key:<40} {row.status:<11} epochs {row.epochs_done}/{row.epochs}{failure}")
    step = next_step(chain)
    left = sum(r.epochs - r.epochs_done for r in rows if r.status != "FINISHED")
    lines.append(f"remaining: {sum(r.status != 'FINISHED' for r in rows)} run(s), {left} epoch(s)")
    lines.append(f"next: {step.action} ({step.why})")
    return "\n".join(lines) + "\n"


def status(args: argparse.Namespace) -> int:
    print(report(Chain.load(folder(str(Path(args.storage).resolve()), args.name))), end="")
    return 0
