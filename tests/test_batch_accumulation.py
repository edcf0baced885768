"""A row trained on fewer workers than the paper's GPUs keeps the paper's global batch by accumulating gradients, says
so in the table, and a row that could only reach another global batch is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import results
from harness.experiment import load_experiment, run_overrides
from spikingformer._validation import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _imagenet_on(tmp_path: Path, workers: int) -> Path:
    data = yaml.safe_load((REPO / "experiments" / "imagenet.yaml").read_text())
    data["resources"]["num_workers"] = workers
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_fewer_workers_accumulate_to_the_papers_global_batch_and_the_table_says_so(tmp_path: Path) -> None:
    eight = load_experiment(REPO / "experiments" / "imagenet.yaml")
    row = eight.row("8-512")
    assert eight.config(row).optim.grad_accum_steps == 1 and eight.accumulation_note(row) is None  # as the paper
    two = load_experiment(_imagenet_on(tmp_path, 2))
    config = two.config(two.row("8-512"))
    assert (config.data.batch_size, config.optim.grad_accum_steps, config.data.recipe_global_batch) == (36, 4, 288)
    assert two.config(two.row("8-768")).optim.grad_accum_steps == 4  # 24 per rank x 2 x 4 = 192
    table = results.format_table(two, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert ("Gradient accumulation keeps the paper's global batch:\n"
            "- 8-384: 2 worker(s) x 36 per rank x 4 accumulated = 288, the paper's global batch\n") in table
    smoke = two.train_config(row, run_overrides(config, smoke=True))  # a smoke run is one worker at batch 2
    assert smoke.optim.grad_accum_steps == 1 and smoke.data.recipe_global_batch is None


def test_a_row_that_would_change_the_effective_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_experiment(_imagenet_on(tmp_path, 5))
    problems = str(refused.value).splitlines()  # every row that cannot reach it, one line each
    assert problems[0] == "3 problems:" and len(problems) == 4
    first = problems[1]
    assert "row 8-384" in first and str(tmp_path / "imagenet.yaml") in first
    assert "5 worker(s) x data.batch_size 36 cannot reach the paper's global batch 288" in first
