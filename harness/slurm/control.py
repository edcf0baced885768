"""Starting and ending a chain: ``sfh slurm submit`` (check, write the script, queue it) and ``sfh slurm cancel``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.slurm import scheduler
from harness.slurm.chain import CANCELLED, Chain, folder


def reproduce_arguments(args: argparse.Namespace, storage: str, tracking_uri: str) -> list[str]:
    """``sfh reproduce``'s arguments for the chain's jobs: the submit's row options, with absolute paths (jobs run
    elsewhere, from the working directory the script names)."""
    argv = [str(Path(args.experiment).resolve()), "--storage", storage, "--tracking-uri", tracking_uri]
    flags = {"skip_invalid": "--skip-invalid", "smoke": "--smoke", "skip_data_check": "--skip-data-check"}
    argv += [flag for key, flag in flags.items() if getattr(args, key)]
    values = {"rows": ",".join(args.rows or []), "seeds": args.seeds, "epochs": args.epochs,
              "data_root": args.data_root and str(Path(args.data_root).resolve()),
              "max_concurrent": args.max_concurrent, "energy_batches": args.energy_batches,
              "max_failures": args.max_failures}
    for key, value in values.items():
        if value not in (None, ""):
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def submit(args: argparse.Namespace) -> int:
    """Plan the rows, refuse what the allocation cannot hold, write the chain's folder and script, queue it."""
    from harness import tracking
    from harness.run.launch import plan_reproduction
    from harness.slurm.allocation import Allocation, check_fits, cpus_needed, time_limit_s
    from harness.slurm.script import JobOptions, render

    if "://" in args.storage:
        raise ValueError(f"--storage {args.storage}: a chain keeps its script, lock and state on a filesystem "
                         "that every node mounts; give a path on it")
    if args.ray_node_ip and args.nodes > 1:
        raise ValueError(f"--ray-node-ip {args.ray_node_ip} names one node's address: only for --nodes 1")
    limit = time_limit_s(args.time)
    if args.signal_lead >= limit:
        raise ValueError(f"--signal-lead {args.signal_lead} s is not shorter than --time {args.time} ({limit} s)")
    storage = str(Path(args.storage).resolve())
    uri = args.tracking_uri or tracking.default_tracking_uri()
    args.storage, args.tracking_uri = storage, uri
    plan = plan_reproduction(args)  # every row validated here
    resources = {s.row: s.resources for s in plan.specs}
    allocation = Allocation(
        nodes=args.nodes, gpus_per_node=args.gpus_per_node, time=args.time, partition=args.partition,
        account=args.account,
        cpus_per_node=args.cpus_per_node or cpus_needed(list(resources.values()), args.nodes, args.gpus_per_node),
    )
    check_fits(resources, allocation)
    chain = Chain(folder(storage, plan.name), plan.name, str(args.experiment), storage, uri,
                  reproduce_arguments(args, storage, uri), {s.run_key: s.total_epochs for s in plan.specs})
    if not args.dry_run:
        _refuse_running(chain.folder)
    options = JobOptions(
        signal_lead_s=args.signal_lead, max_restarts=args.max_restarts, ray_node_ip=args.ray_node_ip,
        bin_dir=Path(sys.executable).parent, workdir=Path.cwd(), sbatch_options=tuple(args.sbatch_option or ()),
    )
    chain.folder.mkdir(parents=True, exist_ok=True)
    chain.script.write_text(render(chain, allocation, options))
    print(f"{plan.name}: {len(plan.specs)} (row, seed) run(s) on {allocation.describe()}, {args.time} per job; "
          f"script {chain.script}")
    if args.dry_run:
        print(chain.script.read_text(), end="")
        return 0
    (chain.folder / CANCELLED).unlink(missing_ok=True)
    chain.make_token()
    chain.save()
    job = scheduler.submit(chain.script)
    chain.jobs.append(job)
    chain.save()
    chain.log(f"job {job} submitted ({allocation.describe()}, {args.time})")
    print(f"{plan.name}: submitted job {job}; watch with `sfh slurm status {plan.name}"
          f"{_storage_flag(storage)}`, output in {chain.folder}/job-{job}.out")
    return 0


def _refuse_running(where: Path) -> None:
    """A second chain of one experiment while a job of the first may still run would share its token and state."""
    try:
        chain = Chain.load(where)
    except FileNotFoundError:
        return
    for job in chain.jobs:
        info = scheduler.job(job)
        if info is not None and info.get("JobState") in scheduler.ALIVE:
            raise ValueError(f"chain {chain.name} has job {job} {info['JobState']}: end it first "
                             f"(`sfh slurm cancel {chain.name}{_storage_flag(chain.storage)}`)")


def _storage_flag(storage: str) -> str:
    return "" if Path(storage) == Path("runs/ray").resolve() else f" --storage {storage}"


def cancel(args: argparse.Namespace) -> int:
    """End every job of the chain that Slurm still knows; the chain's jobs requeue no more."""
    chain = Chain.load(folder(str(Path(args.storage).resolve()), args.name))
    (chain.folder / CANCELLED).write_text(f"at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
    ended = [job for job in chain.jobs if scheduler.cancel(job)]
    chain.log(f"cancelled by sfh slurm cancel (job(s) {', '.join(ended) or 'none still known'})")
    print(f"{chain.name}: cancelled job(s) {', '.join(ended) or '(none still known to Slurm)'}; the state stays in "
          f"{chain.storage}/{chain.name}: `sfh slurm submit` again continues it")
    return 0
