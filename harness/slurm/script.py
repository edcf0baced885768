"""The batch script of a chain, written out in full so that a user can read it, edit it and submit it by hand.

It follows Ray's documented way of running a cluster inside a Slurm allocation: ``ray start --head --block`` under
``srun`` on the first node, ``ray start --address ... --block`` under ``srun`` on the others, the driver in the
batch shell itself. The driver has to be there: ``--signal=B:USR1@LEAD`` reaches the batch shell only, which hands
it on to the driver as a SIGTERM, on which every trial checkpoints at its next step (``ray symmetric-run`` would run
the driver inside a job step, out of the shell's reach, and ends with ``ray stop``, which stops every Ray of the
user on the node).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from harness.slurm.allocation import Allocation
from harness.slurm.chain import Chain

#: Ray's ports of one job: a block of 100 chosen by the job id, so two jobs sharing a node rarely collide.
PORT_BASE, PORT_BLOCKS = 20000, 400


@dataclass(frozen=True)
class JobOptions:
    """How each job of the chain runs, beyond its allocation."""

    #: Seconds before the time limit at which Slurm sends SIGUSR1 (Slurm may send it up to a minute earlier).
    signal_lead_s: int
    #: Requeues after which the chain stops, whatever is left (a driver that crashes at every start).
    max_restarts: int
    #: The Ray node's address on a one-node allocation; None lets the first node's hostname decide.
    ray_node_ip: str | None
    #: The ``sfh`` and ``ray`` executables of this installation (the nodes share its filesystem).
    bin_dir: Path
    #: The job's working directory (relative paths in the experiment, e.g. data roots, resolve from it).
    workdir: Path
    #: Further ``#SBATCH`` options, verbatim (``--qos=long``, ``--constraint=a100``).
    sbatch_options: tuple[str, ...] = ()


def render(chain: Chain, allocation: Allocation, options: JobOptions) -> str:
    """The job script of ``chain``."""
    q = shlex.quote
    directives = [
        f"--job-name=sfh-{chain.name}",
        f"--nodes={allocation.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={allocation.cpus_per_node}",
        *([f"--gpus-per-node={allocation.gpus_per_node}"] if allocation.gpus_per_node else []),
        f"--time={allocation.time}",
        *([f"--partition={allocation.partition}"] if allocation.partition else []),
        *([f"--account={allocation.account}"] if allocation.account else []),
        f"--signal=B:USR1@{options.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={chain.folder}/job-%j.out",
        f"--chdir={options.workdir}",
        *options.sbatch_options,
    ]
    header = "\n".join(f"#SBATCH {d}" for d in directives)
    values = {
        "SFH": q(str(options.bin_dir / "sfh")), "RAY": q(str(options.bin_dir / "ray")), "CHAIN": q(str(chain.folder)),
        "NAME": q(chain.name), "STORAGE": q(chain.storage), "CPUS": str(allocation.cpus_per_node),
        "GPUS": str(allocation.gpus_per_node), "MAX_RESTARTS": str(options.max_restarts),
        "RAY_NODE_IP": q(options.ray_node_ip or ""),
    }
    assignments = "\n".join(f"{k}={v}" for k, v in values.items())
    reproduce = " ".join(q(a) for a in chain.reproduce)
    return _TEMPLATE.format(
        name=chain.name, experiment=chain.experiment_file, when=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        header=header, assignments=assignments, reproduce=reproduce, base=PORT_BASE, blocks=PORT_BLOCKS,
    )


_TEMPLATE = """\
#!/bin/bash
# A job of the Slurm chain of experiment {name} ({experiment}), written by `sfh slurm submit` on {when}.
#
# Each run of this job asks `sfh slurm next` what is left (nothing: it ends at once), starts a Ray cluster on its
# nodes, runs `sfh reproduce` the first time and `sfh resume` afterwards, and stops the cluster. Slurm sends
# SIGUSR1 before the time limit: the driver gets a SIGTERM, every trial writes a checkpoint at its next optimizer
# step and stops, and the job requeues itself while runs remain. On SIGTERM (preemption, `scontrol requeue`,
# scancel) the driver is stopped the same way and Slurm decides what follows. Each step is logged to
# $CHAIN/events.log; `sfh slurm status {name}` shows the chain.
{header}

set -u
{assignments}
# `sfh reproduce`'s arguments (the experiment, its storage and tracking, the rows).
REPRODUCE=({reproduce})

# Ray: token authentication with the chain's own token, no usage stats; MLflow: no telemetry.
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$CHAIN/ray-token" RAY_USAGE_STATS_ENABLED=0
export MLFLOW_DISABLE_TELEMETRY=true

RUN=${{SLURM_RESTART_COUNT:-0}}
log() {{ echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) job $SLURM_JOB_ID run $RUN: $*" | tee -a "$CHAIN/events.log"; }}

# Signals arrive while Ray starts, too: note them; once the driver runs, hand it a SIGTERM (every trial checkpoints
# at its next step and stops).
stopping=
driver=
on_signal() {{
  stopping=$1
  log "SIG$1 ($2): stopping the driver; its trials checkpoint at their next step"
  if [ -n "$driver" ]; then kill -TERM "$driver" 2>/dev/null; fi
}}
trap 'on_signal USR1 "time limit ahead"' USR1
trap 'on_signal TERM "preempted, requeued or cancelled"' TERM

# 1. What is left: reproduce, resume, done or stop (and why).
read -r action why < <("$SFH" slurm next "$CHAIN")
log "${{action:-error}}: ${{why:-sfh slurm next failed}}"
case ${{action:-error}} in
  done) exit 0 ;;
  reproduce | resume) ;;
  *) exit 1 ;;
esac

# 2. Ray on the allocation's nodes only: the head on the first node, a worker on each other; ports from a block of
# 100 chosen by the job id.
NODES=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
HEAD_NODE=${{NODES[0]}}
if [ -z "$RAY_NODE_IP" ]; then
  RAY_NODE_IP=$(srun --nodes=1 --ntasks=1 --overlap -w "$HEAD_NODE" hostname --ip-address | awk '{{print $1}}')
fi
BASE=$(( {base} + SLURM_JOB_ID % {blocks} * 100 ))
ADDRESS=$RAY_NODE_IP:$BASE
NODE_PORTS=(--node-manager-port=$((BASE + 1)) --object-manager-port=$((BASE + 2))
  --dashboard-agent-grpc-port=$((BASE + 3)) --dashboard-agent-listen-port=$((BASE + 4))
  --runtime-env-agent-port=$((BASE + 5)) --metrics-export-port=$((BASE + 6))
  --min-worker-port=$((BASE + 10)) --max-worker-port=$((BASE + 99)))
ray_steps=()
stop_ray() {{
  if [ ${{#ray_steps[@]}} -gt 0 ]; then kill "${{ray_steps[@]}}" 2>/dev/null; wait "${{ray_steps[@]}}" 2>/dev/null; fi
}}
wait_nodes() {{  # until $1 nodes have joined; gives up at once when the head's step has ended
  "$SFH" slurm wait-nodes "$ADDRESS" "$1" &
  local waiter=$!
  while kill -0 "$waiter" 2>/dev/null; do
    if ! kill -0 "${{ray_steps[0]}}" 2>/dev/null; then kill "$waiter" 2>/dev/null; fi
    sleep 2
  done
  wait "$waiter"
}}
# The head has one logical CPU more than its cores: the trials' drivers and Train controllers only wait.
srun --nodes=1 --ntasks=1 --overlap -w "$HEAD_NODE" "$RAY" start --head --block --node-ip-address="$RAY_NODE_IP" \\
  --port="$BASE" --ray-client-server-port=$((BASE + 7)) --dashboard-port=$((BASE + 8)) "${{NODE_PORTS[@]}}" \\
  --num-cpus=$((CPUS + 1)) --num-gpus="$GPUS" --disable-usage-stats &
ray_steps+=($!)
if wait_nodes 1 && [ "$SLURM_JOB_NUM_NODES" -gt 1 ]; then
  srun --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks-per-node=1 --overlap --exclude="$HEAD_NODE" \\
    "$RAY" start --block --address="$ADDRESS" "${{NODE_PORTS[@]}}" --num-cpus="$CPUS" --num-gpus="$GPUS" \\
    --disable-usage-stats &
  ray_steps+=($!)
fi
ray_up=yes
if ! wait_nodes "$SLURM_JOB_NUM_NODES"; then
  log "Ray did not start on all $SLURM_JOB_NUM_NODES node(s) (the output above says why)"
  ray_up=
fi

# 3. The driver, in this shell so that the signals above reach it.
code=1
if [ -z "$stopping" ] && [ -n "$ray_up" ]; then
  log "$action with Ray at $ADDRESS on ${{NODES[*]}}"
  if [ "$action" = reproduce ]; then
    "$SFH" reproduce "${{REPRODUCE[@]}}" --address "$ADDRESS" &
  else
    "$SFH" resume "$NAME" --storage "$STORAGE" --address "$ADDRESS" &
  fi
  driver=$!
  wait "$driver"; code=$?
  while kill -0 "$driver" 2>/dev/null; do wait "$driver"; code=$?; done  # a signal ends `wait` early
  log "driver exited with $code"
fi
stop_ray

# 4. What follows. On SIGTERM Slurm decides (a preempted or requeued job runs again). Otherwise the driver's status
# says: 0, every run FINISHED; 143 (SIGTERM) or 130 (Ctrl-C), it stopped with runs left; anything else (a driver
# that failed, or none because Ray did not start) is looked into.
if [ "$stopping" = TERM ]; then exit "$code"; fi
if [ -e "$CHAIN/cancelled" ]; then log "not requeued: the chain was cancelled"; exit 0; fi
case $code in
  0) log "done: every run FINISHED"; exit 0 ;;
  130 | 143) why="runs left after SIG${{stopping:-INT}}" ;;
  *)
    read -r action why < <("$SFH" slurm next "$CHAIN")
    case ${{action:-error}} in
      done) log "done: $why"; exit 0 ;;
      reproduce | resume) ;;
      *) log "${{action:-error}}: ${{why:-sfh slurm next failed}}; not requeued"; exit 1 ;;
    esac ;;
esac
if [ "$RUN" -ge "$MAX_RESTARTS" ]; then
  log "not requeued: $MAX_RESTARTS restarts reached ($why)"
  exit 1
fi
log "requeued ($why)"
scontrol requeue "$SLURM_JOB_ID"
"""
