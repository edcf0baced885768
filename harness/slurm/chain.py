"""A chain's folder and what it knows: the record written at submit time, the events its jobs log, and the
decision each job takes when it starts and when its driver ends (``sfh slurm next``).

The folder is ``<storage>/slurm/<name>/`` beside the experiment's state, on the shared filesystem every node
sees: ``job.sbatch`` (the script, readable and editable), ``chain.json`` (the submit options and job ids),
``events.log`` (one line per thing a job did), ``job-<id>.out`` (its output), ``ray-token`` (the Ray cluster's
token, mode 0600) and ``cancelled`` once ``sfh slurm cancel`` ended it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECORD, EVENTS, SCRIPT, TOKEN, CANCELLED = "chain.json", "events.log", "job.sbatch", "ray-token", "cancelled"
#: The failure kind that stops a chain (a NaN loss, a config or data error): the same would happen in every job.
DETERMINISTIC = "deterministic"
#: What ``sfh reproduce`` writes beside Tune's state once its trials are planned (``harness.run.sweep.INVOCATION``,
#: named again here so that a job's decision does not import the launcher).
INVOCATION = "sfh_invocation.json"


def folder(storage: str, name: str) -> Path:
    return Path(storage) / "slurm" / name


@dataclass
class Chain:
    """One submitted chain: ``reproduce`` holds ``sfh reproduce``'s arguments (absolute paths), ``runs`` the run
    key and epochs of every (row, seed) they train, ``created`` when it was submitted (a run that FAILED since then
    stops it), ``jobs`` every Slurm job id it was given."""

    folder: Path
    name: str
    experiment_file: str
    storage: str
    tracking_uri: str
    reproduce: list[str]
    runs: dict[str, int]
    created: float = field(default_factory=time.time)
    jobs: list[str] = field(default_factory=list)

    @property
    def script(self) -> Path:
        return self.folder / SCRIPT

    @property
    def events(self) -> Path:
        return self.folder / EVENTS

    @property
    def cancelled(self) -> bool:
        return (self.folder / CANCELLED).exists()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in asdict(self).items() if k != "folder"}
        (self.folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, where: Path) -> Chain:
        try:
            record = json.loads((where / RECORD).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{where} holds no {RECORD}: no chain was submitted there (check --storage "
                                    "and the experiment's name)") from None
        try:
            return cls(folder=where, **record)
        except TypeError as err:
            raise ValueError(f"{where / RECORD} was written by another version of sfh ({err}): submit again") from None

    def make_token(self) -> None:
        """A fresh secret for the chain's Ray clusters, readable by its owner only."""
        path = self.folder / TOKEN
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")

    def log(self, text: str) -> None:
        with self.events.open("a") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}\n")

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []


@dataclass(frozen=True)
class RowProgress:
    """One (row, seed) of the chain as MLflow has it."""

    key: str
    status: str
    epochs_done: int
    epochs: int
    ended: float | None
    failure: str
    kind: str


@dataclass(frozen=True)
class Step:
    """What a job does next: ``reproduce`` (the chain's first driver, or runs that failed for a passing reason),
    ``resume`` (its Tune state exists), ``done`` (every run FINISHED) or ``stop`` (a run failed deterministically
    since the chain began, or the chain was cancelled)."""

    action: str
    why: str


def progress(chain: Chain) -> list[RowProgress]:
    """Every (row, seed) of the chain with its MLflow status and epochs logged."""
    from harness import tracking

    store = tracking.Tracking(chain.tracking_uri)
    experiment_id = store.find_experiment(chain.name)
    rows = []
    for key, epochs in chain.runs.items():
        run = store.find_run(experiment_id, key) if experiment_id is not None else None
        if run is None:
            rows.append(RowProgress(key, "NOT STARTED", 0, epochs, None, "", ""))
            continue
        tags = run.data.tags
        rows.append(RowProgress(
            key, run.info.status, len(store.logged_steps(run.info.run_id)), epochs,
            run.info.end_time / 1000 if run.info.end_time else None,
            tags.get(tracking.FAILURE, ""), tags.get(tracking.FAILURE_KIND, ""),
        ))
    return rows


def next_step(chain: Chain) -> Step:
    """The decision of a job: nothing to do, stop, or which driver to run. Light on purpose (MLflow's client and
    Ray Tune's state check, not the experiment's models): every job asks it before Ray starts."""
    if chain.cancelled:
        return Step("stop", f"cancelled by `sfh slurm cancel` ({(chain.folder / CANCELLED).read_text().strip()})")
    rows = progress(chain)
    failed = [r for r in rows if r.status == "FAILED" and (r.ended or 0) >= chain.created]
    deterministic = [r for r in failed if r.kind == DETERMINISTIC]
    if deterministic:
        return Step("stop", "; ".join(f"{r.key} FAILED ({r.kind}): {r.failure}" for r in deterministic))
    left = [r for r in rows if r.status != "FINISHED"]
    if not left:
        return Step("done", f"all {len(rows)} (row, seed) run(s) FINISHED")
    epochs = sum(r.epochs - r.epochs_done for r in left)
    what = f"{len(left)} of {len(rows)} (row, seed) run(s) left, {epochs} epoch(s)"
    if failed:  # lost nodes, memory, a driver error: trained again from their checkpoints (Tune took them as done)
        return Step("reproduce", f"{what}; trained again: " + "; ".join(f"{r.key} ({r.kind or 'no kind'})"
                                                                        for r in failed))
    from ray import tune

    state = Path(chain.storage) / chain.name
    invocation = state / INVOCATION
    if invocation.exists() and invocation.stat().st_mtime >= chain.created and tune.Tuner.can_restore(str(state)):
        return Step("resume", f"{what}; Tune state in {state}")
    return Step("reproduce", what)
