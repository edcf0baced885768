"""The library stands alone: spikingformer trains and measures without the harness.

In a fresh interpreter, ``import spikingformer``, building every model family, one training step and one
energy measurement must load none of Ray, MLflow, Optuna, the harness or the dashboards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("ray", "mlflow", "optuna", "harness", "dashboards")

SCRIPT = """
import json, sys
import torch
import spikingformer
from spikingformer.energy import measure_energy
from spikingformer.models import MODEL_CONFIGS, build_model

families = {}
for name, (cls, _) in MODEL_CONFIGS.items():
    families.setdefault(cls.__name__, name)
built = {}
for family, name in families.items():
    with torch.device("meta"):
        model = build_model(name)
    built[family] = sum(p.numel() for p in model.parameters())

torch.manual_seed(0)
model = build_model("spikingformer_cifar_2_384", embed_dim=32, depth=1, num_heads=2, T=2)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
loss = torch.nn.functional.cross_entropy(model(x), y)
loss.backward()
optimizer.step()
report = measure_energy(model, [(x, y)])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print(json.dumps({"families": built, "loss": loss.item(), "energy_mJ": report.energy_mj, "loaded": loaded}))
"""


def test_library_imports_none_of_the_harness_stack() -> None:
    script = SCRIPT.replace("FORBIDDEN", repr(set(FORBIDDEN)))
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the library pulled in {result['loaded']}"
    assert {"Spikingformer", "Spikformer"} <= set(result["families"])
    assert all(count > 0 for count in result["families"].values())
    assert result["loss"] > 0 and result["energy_mJ"] > 0
