"""``sfh slurm`` without a Slurm cluster: the allocation check that refuses a row before anything is queued, the
job script it writes (parsed by bash), and the decision a job takes from the chain's MLflow runs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from harness import tracking
from harness.cli import build_parser, main
from harness.run import sweep
from harness.run.launch import Reproduction, plan_reproduction
from harness.run.trial import open_run
from harness.slurm.allocation import Allocation, check_fits, cpus_needed, time_limit_s
from harness.slurm.chain import CANCELLED, INVOCATION, Chain, folder, next_step

REPO = Path(__file__).resolve().parents[1]
IMAGENET = REPO / "experiments" / "imagenet.yaml"
DEMO = REPO / "experiments" / "demo.yaml"
EIGHT_GPU_WORKER = {"num_workers": 8, "use_gpu": "auto", "cpus_per_worker": 8.0}


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 1800), ("05:30", 330), ("24:00:00", 86400), ("2-00", 172800), ("1-02:03", 93780), ("1-00:00:10", 86410),
])
def test_slurm_time_formats(text: str, seconds: int) -> None:
    assert time_limit_s(text) == seconds


def test_a_malformed_time_is_refused_naming_the_formats() -> None:
    with pytest.raises(ValueError, match=r"--time '1h'.*HH:MM:SS"):
        time_limit_s("1h")


def test_an_eight_gpu_row_fits_two_nodes_of_four_and_not_one() -> None:
    two = Allocation(nodes=2, cpus_per_node=32, gpus_per_node=4, time="24:00:00")
    check_fits({"8-768": EIGHT_GPU_WORKER}, two)
    assert cpus_needed([EIGHT_GPU_WORKER], nodes=2, gpus_per_node=4) == 32
    with pytest.raises(ValueError) as refused:
        check_fits({"8-768": EIGHT_GPU_WORKER}, Allocation(nodes=1, cpus_per_node=64, gpus_per_node=4, time="1"))
    assert "row 8-768: 8 worker(s) of (8 CPU, 1 GPU); 1 node(s) x (64 CPU, 4 GPU) holds 4" in str(refused.value)
    # Enough GPUs but too few CPUs per node: a worker never spans nodes.
    with pytest.raises(ValueError, match=r"2 node\(s\) x \(16 CPU, 4 GPU\) holds 4"):
        check_fits({"8-768": EIGHT_GPU_WORKER}, Allocation(nodes=2, cpus_per_node=16, gpus_per_node=4, time="1"))
    with pytest.raises(ValueError, match="use_gpu is true, and the job asks for no GPU"):
        no_gpu = Allocation(nodes=2, cpus_per_node=32, gpus_per_node=0, time="1")
        check_fits({"r": {**EIGHT_GPU_WORKER, "use_gpu": True}}, no_gpu)


def test_submit_refuses_an_impossible_row_before_writing_or_queueing(tmp_path: Path, capsys) -> None:
    code = main(["slurm", "submit", str(IMAGENET), "--nodes", "1", "--gpus-per-node", "4", "--time", "24:00:00",
                 "--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "refused before queueing" in err
    for row in ("8-384", "8-512", "8-768"):
        assert f"row {row}: 8 worker(s) of (8 CPU, 1 GPU); 1 node(s) x (32 CPU, 4 GPU) holds 4" in err
    assert not (tmp_path / "ray").exists()  # no script, no chain: nothing was queued


def test_submit_refuses_a_signal_lead_past_the_time_limit(tmp_path: Path, capsys) -> None:
    code = main(["slurm", "submit", str(DEMO), "--time", "5", "--signal-lead", "300", "--storage", str(tmp_path)])
    assert code == 2
    assert "--signal-lead 300 s is not shorter than --time 5 (300 s)" in capsys.readouterr().err


def test_the_imagenet_script_on_two_nodes_of_four_gpus(tmp_path: Path, capsys) -> None:
    storage = tmp_path / "cluster-fs" / "ray"
    code = main(["slurm", "submit", str(IMAGENET), "--nodes", "2", "--gpus-per-node", "4", "--time", "24:00:00",
                 "--partition", "gpu", "--account", "snn", "--sbatch-option=--qos=long", "--storage", str(storage),
                 "--tracking-uri", "http://mlflow.example:5000", "--data-root", "/shared/data", "--dry-run"])
    assert code == 0
    script = (storage / "slurm" / "imagenet" / "job.sbatch").read_text()
    assert capsys.readouterr().out.endswith(script)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=32",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --time=24:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --account=snn", "#SBATCH --signal=B:USR1@300", "#SBATCH --requeue", "#SBATCH --qos=long",
                 f"#SBATCH --output={storage}/slurm/imagenet/job-%j.out"):
        assert line + "\n" in script
    assert f"REPRODUCE=({IMAGENET} --storage {storage} --tracking-uri http://mlflow.example:5000 --data-root " \
           "/shared/data" in script
    assert 'RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$CHAIN/ray-token"' in script
    assert '"$RAY" start --head --block --node-ip-address="$RAY_NODE_IP" \\\n  --port="$BASE"' in script
    assert '--exclude="$HEAD_NODE" \\\n    "$RAY" start --block --address="$ADDRESS"' in script
    assert "scontrol requeue" in script and "ray stop" not in script.replace("`ray stop`", "")
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0
    assert not (storage / "slurm" / "imagenet" / "chain.json").exists()  # a dry run starts no chain


def _chain(tmp_path: Path) -> tuple[Chain, Reproduction]:
    """A chain of the demo's two rows at 2 epochs, as submit records it, and what its ``sfh reproduce`` plans."""
    storage, uri = str(tmp_path / "ray"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [str(DEMO), "--storage", storage, "--tracking-uri", uri, "--epochs", "2"]
    plan = plan_reproduction(build_parser().parse_args(["reproduce", *argv]))
    chain = Chain(folder(storage, plan.name), plan.name, str(DEMO), storage, uri, argv,
                  {s.run_key: s.total_epochs for s in plan.specs})
    chain.save()
    assert Chain.load(chain.folder) == chain
    return chain, plan


def test_a_job_reproduces_then_ends_when_all_is_finished_and_stops_on_a_deterministic_failure_of_the_chain(
        tmp_path: Path) -> None:
    chain, plan = _chain(tmp_path)
    step = next_step(chain)
    assert (step.action, step.why) == ("reproduce", "2 of 2 (row, seed) run(s) left, 4 epoch(s)")
    store = tracking.Tracking(plan.tracking_uri)
    runs = {spec.row: open_run(store, spec, spec.run_key).info.run_id for spec in plan.specs}
    store.log_metrics(runs["spikingformer"], {"epoch": 0, "top1": 50.0}, step=0)
    store.record_failure(runs["spikformer"], "interrupted", "", kind="interrupted", status="KILLED")
    assert next_step(chain).why == "2 of 2 (row, seed) run(s) left, 3 epoch(s)"
    for run_id in runs.values():
        store.end(run_id, "FINISHED")
    assert next_step(chain).action == "done"

    later, plan = _chain(tmp_path / "later")  # a failure before the chain began is retried, one since stops it
    store = tracking.Tracking(plan.tracking_uri)
    run_id = open_run(store, plan.specs[0], plan.specs[0].run_key).info.run_id
    store.record_failure(run_id, "rank 0: FloatingPointError: loss is nan", "", kind="deterministic")
    later.created = time.time() + 5
    assert next_step(later).action == "reproduce"
    later.created = 0.0
    step = next_step(later)
    assert step.action == "stop"
    assert step.why == "demo-e2/spikingformer/seed0 FAILED (deterministic): rank 0: FloatingPointError: loss is nan"
    store.record_failure(run_id, "node lost", "", kind="retries exhausted")  # a passing cause: trained again
    step = next_step(later)
    assert (step.action, step.why) == ("reproduce", "2 of 2 (row, seed) run(s) left, 4 epoch(s); trained again: "
                                                    "demo-e2/spikingformer/seed0 (retries exhausted)")
    (later.folder / CANCELLED).write_text("at now\n")
    assert next_step(later).why == "cancelled by `sfh slurm cancel` (at now)"


def test_the_chain_reads_the_invocation_file_that_reproduce_writes() -> None:
    assert INVOCATION == sweep.INVOCATION
