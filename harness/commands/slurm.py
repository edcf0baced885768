"""``sfh slurm``: train an experiment on a Slurm cluster as a chain of batch jobs.

``submit`` checks every row against the allocation (before anything is queued), writes the job script beside the
experiment's storage (``<storage>/slurm/<name>/job.sbatch``) and queues it; each job starts a Ray cluster on its
nodes, runs ``sfh reproduce`` the first time and ``sfh resume`` afterwards, and requeues itself at its time limit
while runs remain. ``status`` shows the chain, ``cancel`` ends it. ``next`` and ``wait-nodes`` are what the job
script calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import (
    add_data_check_option,
    add_failure_option,
    add_row_options,
    add_tracking_option,
    at_least,
)

HELP = "train an experiment on Slurm: a chain of jobs through time limits and preemption"
STORAGE_HELP = "Tune/Train storage on a filesystem every node mounts (default runs/ray); the chain lives in " \
               "<storage>/slurm/<name>/"


def submit(args: argparse.Namespace) -> int:
    from harness.slurm.control import submit

    return submit(args)


def status(args: argparse.Namespace) -> int:
    from harness.slurm.status import status

    return status(args)


def cancel(args: argparse.Namespace) -> int:
    from harness.slurm.control import cancel

    return cancel(args)


def next_step(args: argparse.Namespace) -> int:
    from harness.slurm.chain import Chain, next_step

    step = next_step(Chain.load(Path(args.chain)))
    print(step.action, step.why)
    return 0


def wait_nodes(args: argparse.Namespace) -> int:
    from harness.run.cluster import wait_for_nodes

    print(wait_for_nodes(args.address, args.count, args.timeout), flush=True)
    return 0


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the experiment's tracked name, e.g. imagenet (demo-e2 with --epochs 2)")
    parser.add_argument("--storage", default="runs/ray", help=STORAGE_HELP)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("slurm", help=HELP, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="slurm_command", required=True, metavar="{submit,status,cancel}")

    sub = commands.add_parser("submit", help="check the rows against the allocation, write the job script, queue it")
    sub.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/imagenet.yaml")
    sub.add_argument("--nodes", type=at_least(1), default=1, help="nodes per job (default 1)")
    sub.add_argument("--gpus-per-node", type=at_least(0), default=0, help="GPUs per node (default 0)")
    sub.add_argument("--cpus-per-node", type=at_least(1),
                     help="CPUs per node (default: what the largest row's workers on one node ask for)")
    sub.add_argument("--time", required=True, help="time limit of each job, in Slurm's format (e.g. 24:00:00)")
    sub.add_argument("--partition", help="Slurm partition")
    sub.add_argument("--account", help="Slurm account")
    sub.add_argument("--sbatch-option", action="append", metavar="OPTION",
                     help="a further #SBATCH line, verbatim (e.g. --qos=long); repeatable")
    sub.add_argument("--signal-lead", type=at_least(1), default=300, metavar="S",
                     help="seconds before the time limit at which the job checkpoints and requeues (default 300)")
    sub.add_argument("--max-restarts", type=at_least(0), default=50,
                     help="requeues after which the chain stops whatever is left (default 50)")
    sub.add_argument("--ray-node-ip", metavar="IP",
                     help="the Ray node's address on a one-node job (a loopback address keeps Ray off the network)")
    sub.add_argument("--dry-run", action="store_true", help="write and print the script, queue nothing")
    sub.add_argument("--storage", default="runs/ray", help=STORAGE_HELP)
    add_row_options(sub)
    add_data_check_option(sub)
    add_tracking_option(sub)
    sub.add_argument("--max-concurrent", type=at_least(1), help="trials at once (default: as many as the job fits)")
    sub.add_argument("--energy-batches", type=at_least(1), default=8, help="evaluation batches of the energy pass")
    add_failure_option(sub)
    sub.set_defaults(func=submit)

    sub = commands.add_parser("status", help="the chain's jobs, events, epochs per run and what comes next")
    _add_name(sub)
    sub.set_defaults(func=status)

    sub = commands.add_parser("cancel", help="end the chain's jobs; its state stays for a later submit")
    _add_name(sub)
    sub.set_defaults(func=cancel)

    sub = commands.add_parser("next", help="(run by the job script) print what the job does next, and why")
    sub.add_argument("chain", help="the chain's folder, <storage>/slurm/<name>")
    sub.set_defaults(func=next_step)

    sub = commands.add_parser("wait-nodes", help="(run by the job script) wait until N Ray nodes have joined")
    sub.add_argument("address", help="the Ray head, host:port")
    sub.add_argument("count", type=at_least(1), help="nodes to wait for")
    sub.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    sub.set_defaults(func=wait_nodes)
