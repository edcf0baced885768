"""``make gpu-check``: on one GPU, what this project's CPU-only test suite cannot run; no dataset needed.

1. ``lif_exactness``: the fused LIF (Triton kernels) against spikingjelly on the device: identical spikes and
   input gradients within 1e-6 relative for every (tau, v_threshold), T 1/4/10/16, contiguous and strided
   input; bf16/fp16 spikes equal to spikingjelly's in the same dtype.
2. ``amp_steps``: a bf16 and an fp16 (GradScaler) training epoch through ``engine.fit``: finite loss.
3. ``bench``: the CUDA rows of ``bench/bench_lif.py`` (spikingformer_8_768 at the ImageNet recipe's per-GPU
   batch, each LIF backend x {fp32, bf16}: images/s, MFU, peak memory) and of ``bench/bench_step.py`` (the same
   step eager against ``torch.compile`` with the fused LIF operator in its graph, side by side, fp32 and bf16:
   speed ratio, peak memory, and whether the compiled step is bit-identical to eager).
4. ``kill_resume``: a 2-epoch ``sfh reproduce`` of a CIFAR-shaped synthetic experiment (``use_gpu`` on the
   GPU) through Ray Tune + Ray Train (NCCL, one worker), its driver killed after epoch 0 was logged, then
   ``sfh resume``: the trial goes on from its checkpoint (epoch 1 only), and the checkpoint's device generator
   states (CUDA's on the GPU) are put back exactly.
5. ``energy``: the energy pass on the device equals the CPU pass on the same weights and batch.
6. ``plan``: ``sfh plan`` of the ImageNet 8-768 row on the GPU (synthetic data): its step in the recipe's AMP
   at the per-GPU batch (halved with gradient accumulation if it does not fit), peak memory, and the power the
   GPU's NVML counter measured meanwhile, projected to the whole table's device-hours and kWh.

Writes ``runs/gpu-check/report.json`` and ``report.md``; exits 1 when a check fails, 2 when there is no GPU.
``--cpu`` runs the same checks on CPU at tiny sizes (``make test`` does, so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_lif  # noqa: E402
import bench_step  # noqa: E402

from spikingformer.checkpoints.training import LAST, read_file, rng_state, set_rng_state  # noqa: E402
from spikingformer.config import TrainConfig  # noqa: E402
from spikingformer.energy.measure import measure_energy  # noqa: E402
from spikingformer.models import build_model  # noqa: E402
from spikingformer.neurons import LIF_SETTINGS, compare_lif_backends  # noqa: E402
from spikingformer.training.engine import fit  # noqa: E402

SFH = Path(sys.executable).parent / "sfh"


@dataclass(frozen=True)
class Scale:
    """Sizes of one form of the check: the GPU's, or tiny ones for a CPU."""

    device: str
    lif_neurons: tuple[int, ...]
    model_kwargs: dict = field(default_factory=dict)
    batch: int = 64
    train_batches: int = 40
    #: Batches per epoch of the killed run: long enough an epoch that the kill lands between epoch 0 and 1.
    resume_batches: int = 150
    bench: bool = True
    #: A running Ray cluster the Ray checks join (``--address``); None starts a private local Ray, as users do.
    address: str | None = None

    def cluster_args(self) -> list[str]:
        return ["--address", self.address] if self.address else []


GPU = Scale("cuda", (16, 384, 196))
CPU = Scale("cpu", (2, 24, 40), {"embed_dim": 64, "num_heads": 4, "depth": 1}, batch=4, train_batches=3,
            resume_batches=160, bench=False)  # 40 batches (~2 s an epoch) let the kill miss epoch 1 under load


def lif_exactness(scale: Scale, work: Path) -> dict:
    results, failures = [], []
    for t in (1, 4, 10, 16):
        for tau, v_th in LIF_SETTINGS:
            for contiguous in (True, False):
                x = torch.randn(t, *scale.lif_neurons, generator=torch.Generator().manual_seed(t)) * 1.2 + 0.7
                x = x.to(scale.device)
                x = x if contiguous else x.transpose(-1, -2)
                r = compare_lif_backends(x, tau, v_th)
                results.append({"T": t, "tau": tau, "v_th": v_th, "contiguous": contiguous, "dtype": "fp32",
                                "spikes_equal": r.spikes_equal, "grad_rel_error": r.grad_rel_error})
                if not r.exact() or not 0 < r.firing_rate < 1:
                    failures.append(results[-1])
    for dtype in (torch.bfloat16, torch.float16):
        for tau, v_th in LIF_SETTINGS:
            x = (torch.randn(4, *scale.lif_neurons) * 1.2 + 0.7).to(scale.device, dtype)
            r = compare_lif_backends(x, tau, v_th)
            results.append({"T": 4, "tau": tau, "v_th": v_th, "contiguous": True, "dtype": str(dtype),
                            "spikes_equal": r.spikes_equal, "grad_rel_error": r.grad_rel_error})
            if not r.spikes_equal:
                failures.append(results[-1])
    return {"ok": not failures, "failures": failures, "cases": len(results),
            "max_fp32_grad_rel_error": max(r["grad_rel_error"] for r in results if r["dtype"] == "fp32")}


def _train_config(scale: Scale, amp: str, epochs: int = 1) -> dict:
    batches = scale.train_batches if epochs == 1 else scale.resume_batches
    return {
        "model": {"name": "spikingformer_cifar_4_384", "kwargs": dict(scale.model_kwargs)},
        "data": {"dataset": "synthetic", "batch_size": scale.batch, "train_size": scale.batch * batches,
                 "eval_size": scale.batch, "num_workers": 0},
        "schedule": {"epochs": epochs, "warmup_epochs": 0, "cooldown_epochs": 0},
        "runtime": {"device": scale.device, "amp": amp},
    }


def amp_steps(scale: Scale, work: Path) -> dict:
    losses = {}
    for amp in ("bf16", "fp16"):
        losses[amp] = fit(TrainConfig.from_dict(_train_config(scale, amp))).history[-1]["train_loss"]
    note = "" if scale.device == "cuda" else "CPU: the engine trains in fp32 whatever runtime.amp says"
    return {"ok": all(v == v and abs(v) < float("inf") for v in losses.values()), "train_loss": losses,
            "note": note}


def bench(scale: Scale, work: Path) -> dict:
    if scale.bench:
        rows = bench_lif.cuda_rows() + bench_step.cuda_rows()
    else:  # the same measurement code on a tiny model: one step per backend, eager against compiled (AOT only)
        model = "spikingformer_cifar_4_384"
        rows = bench_lif.variant_rows([(model, scale.batch)], scale.device, ("fp32",), bench_lif.BACKENDS, steps=1,
                                      kwargs=scale.model_kwargs)
        variants = {k: bench_step.VARIANTS[k] for k in ("eager", "compile")}
        rows += bench_step.measure(model, scale.model_kwargs, scale.batch, scale.device, variants, rounds=1,
                                   compile_backend="aot_eager")
    return {"ok": bool(rows), "rows": [{k: r[k] for k in ("name", "value", "unit")} for r in rows]}


#: Epochs of the kill-and-resume check's trial: room for the kill to land between two of them on a loaded machine.
KILL_EPOCHS = 3


def _experiment(scale: Scale, epochs: int = 2) -> dict:
    train = _train_config(scale, "bf16" if scale.device == "cuda" else "none", epochs=epochs)
    return {
        "name": "gpucheck",
        "paper": {"arxiv": "-", "table": "gpu check", "source": "-"},
        "recipe": "cifar10",
        "train": train,
        "resources": {"num_workers": 1, "use_gpu": scale.device == "cuda", "cpus_per_worker": 1},
        "rows": [{"id": "cifar", "model": train.pop("model")}],
    }


def _epochs_logged(uri: str, name: str) -> int:
    from harness import tracking

    store = tracking.Tracking(uri)
    runs = store.trial_runs(name) if store.find_experiment(name) else []
    return max((len(store.client.get_metric_history(r.info.run_id, tracking.EPOCH_KEY)) for r in runs), default=0)


def _reported(storage: Path) -> list[dict]:
    """The results Tune received for the check's trial, oldest first."""
    results = sorted(storage.glob("gpucheck/*/result.json"))
    return [json.loads(line) for p in results for line in p.read_text().splitlines() if line.strip()]


def _tag(uri: str, name: str, key: str) -> str | None:
    from harness import tracking

    runs = tracking.Tracking(uri).trial_runs(name)
    return runs[0].data.tags.get(key) if runs else None


def kill_resume(scale: Scale, work: Path) -> dict:
    """SIGKILL the driver once Tune has an epoch, then ``sfh resume``: the trial goes on from its last checkpoint
    (the epochs Tune had, or one more whose checkpoint Ray Train registered before Tune heard of it), trains
    each later epoch once, and the restored generator states are the saved ones."""
    experiment, storage = work / "gpucheck.yaml", work / "ray"
    experiment.write_text(yaml.safe_dump(_experiment(scale, epochs=KILL_EPOCHS)))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    log = (work / "driver.log").open("w")
    driver = subprocess.Popen([str(SFH), "reproduce", str(experiment), "--storage", str(storage),
                               "--tracking-uri", uri, "--skip-data-check", *scale.cluster_args()], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not _reported(storage) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    finished_early = driver.poll() is not None
    if not finished_early:
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    log.close()
    reported_before = len(_reported(storage))
    if finished_early or not 1 <= reported_before < KILL_EPOCHS:
        return {"ok": False, "error": f"driver not killed between epochs (Tune had {reported_before} of "
                f"{KILL_EPOCHS}, exited {finished_early})", "log": (work / "driver.log").read_text()[-3000:]}
    resumed = subprocess.run([str(SFH), "resume", "gpucheck", "--storage", str(storage), *scale.cluster_args()],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    reported = _reported(storage)
    last_pid = reported[-1]["pid"] if reported else None
    after_resume = [int(r["epoch"]) for r in reported if r["pid"] == last_pid]
    device = torch.device(scale.device)
    restored = []
    for ckpt in sorted(storage.rglob(LAST)):
        state = read_file(ckpt)["rng"][0]
        set_rng_state(state, device)
        now = rng_state(device)
        key = "cuda" if device.type == "cuda" else "torch"
        restored.append(state[key] is not None and torch.equal(now[key], state[key]))
    resumed_from = _tag(uri, "gpucheck", "sfh.resume.from")
    went_on = any(after_resume == list(range(start, KILL_EPOCHS)) for start in (reported_before, reported_before + 1))
    ok = (resumed.returncode == 0 and went_on and bool(resumed_from)
          and _epochs_logged(uri, "gpucheck") == KILL_EPOCHS and restored and all(restored))
    return {"ok": ok, "resume_rc": resumed.returncode, "epochs_reported_before_kill": reported_before,
            "epochs_after_resume": after_resume, "resumed_from": resumed_from, "checkpoints_restored": restored,
            "resume_tail": (resumed.stdout + resumed.stderr)[-2000:]}


def energy(scale: Scale, work: Path) -> dict:
    """Same weights, same batch, fp32 without TF32: firing rates within 1e-3 and energy within 0.1 % (cuDNN and
    oneDNN convolutions round differently, which can flip a spike sitting on a threshold)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = build_model("spikingformer_cifar_4_384", **scale.model_kwargs)
    batch = [(torch.randn(scale.batch, *model.input_shape), torch.zeros(scale.batch, dtype=torch.long))]
    on_cpu = measure_energy(model, batch)
    on_device = measure_energy(model.to(scale.device), [(x.to(scale.device), y) for x, y in batch])
    rate_gap = max(abs(on_cpu.neuron_rates[k] - on_device.neuron_rates[k]) for k in on_cpu.neuron_rates)
    energy_gap = abs(on_device.energy_mj / on_cpu.energy_mj - 1)
    alive = 0 < (on_cpu.firing_rate_mean or 0) < 1
    return {"ok": alive and rate_gap <= 1e-3 and energy_gap <= 1e-3, "energy_mj_cpu": on_cpu.energy_mj,
            "energy_mj_device": on_device.energy_mj, "max_rate_gap": rate_gap, "energy_rel_gap": energy_gap}


def plan(scale: Scale, work: Path) -> dict:
    """On the GPU the energy basis must be the measured counter (not --watts) and the precision the recipe's AMP;
    on CPU (no counter here) the check's own tiny experiment, with its n/a reason."""
    if scale.device == "cuda":
        experiment, extra = REPO / "experiments" / "imagenet.yaml", ["--rows", "8-768", "--device", "cuda"]
    else:
        experiment, extra = work / "plan.yaml", []
        experiment.write_text(yaml.safe_dump(_experiment(scale)))
    out = work / "plan.json"
    done = subprocess.run([str(SFH), "plan", str(experiment), "--steps", "2", "--format", "json", "--out", str(out),
                           "--storage", str(work / "plan-ray"), "--tracking-uri", f"sqlite:///{work / 'plan.db'}",
                           *extra, *scale.cluster_args()], cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr[-3000:]}
    projection = json.loads(out.read_text())
    (row,) = projection["rows"]
    c = row["cost"]
    on_gpu = row["energy_basis"].startswith("measured") and c["precision"] != "fp32"
    return {"ok": c["step_s"] > 0 and (scale.device == "cpu" or on_gpu),
            **{k: c[k] for k in ("device", "precision", "batch", "micro_batch", "step_s", "img_per_s", "peak_mem_mb",
                                 "note")},
            "startup_s": row["startup_s"], "watts": row["watts"], "energy_basis": row["energy_basis"],
            "table_wall_h": projection["wall_s"] / 3600, "table_device_hours": projection["device_hours"],
            "table_energy_kWh": projection["energy_kWh"]}


CHECKS: list[Callable[[Scale, Path], dict]] = [lif_exactness, amp_steps, bench, kill_resume, energy, plan]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the same checks on CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-check", help="report folder")
    parser.add_argument("--only", nargs="*", choices=[c.__name__ for c in CHECKS], help="run only these checks")
    parser.add_argument("--address", help="join this running Ray cluster (host:port) instead of a private local Ray")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; it needs one GPU (`--cpu` runs the tiny CPU form)", file=sys.stderr)
        return 2
    scale = replace(CPU if args.cpu else GPU, address=args.address)
    report = {"device": torch.cuda.get_device_name(0) if scale.device == "cuda" else "cpu", "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for check in CHECKS:
            if args.only and check.__name__ not in args.only:
                continue
            began = time.perf_counter()
            try:
                result = check(scale, Path(tmp))
            except Exception:  # a crashed check is a failed check; the others still run
                result = {"ok": False, "error": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - began, 1)
            report["checks"][check.__name__] = result
            print(f"{'PASS' if result['ok'] else 'FAIL'} {check.__name__} ({result['seconds']} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# gpu-check on {report['device']}", "", "| check | result | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if r['ok'] else 'FAIL'} | {r['seconds']} |" for name, r in report["checks"].items()]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'}")
    return 0 if all(r["ok"] for r in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
