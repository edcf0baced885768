"""The boundaries, checked on the source: ``dashboards`` reads the harness only through ``harness.results`` (and
builds its ``sfh report`` parser from ``harness.options``), and ``harness`` never imports ``dashboards`` (``sfh
report`` comes in by entry point)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from harness.cli import ENTRY_POINTS, build_parser

REPO = Path(__file__).resolve().parents[1]
#: What dashboards/ may import besides the standard library and itself.
DASHBOARDS_MAY_IMPORT = ("harness.results", "harness.options", "matplotlib", "yaml", "numpy")
#: Modules that still read the harness around ``harness.results``, each named with what it reaches: the search
#: report (the study, its front and the search file) and the MLflow UI launcher (the store's experiments). Their
#: read side belongs in ``harness.results``; until it moves there, no other file may do the same.
KNOWN_EXCEPTIONS = {
    "cli.py": {"harness.experiment.search_space"},
    "mlflow_ui.py": {"harness.tracking"},
    "search_report.py": {"harness.experiment.objectives", "harness.experiment.search_space", "harness.run.pareto",
                         "harness.run.search", "harness.tracking", "mlflow.entities", "spikingformer.evaluate"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "harness":  # `from harness import results` imports harness.results
                names.update(f"harness.{alias.name}" for alias in node.names)
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top == "dashboards" or name == "harness":
        return True
    return any(name == m or name.startswith(m + ".") for m in DASHBOARDS_MAY_IMPORT)


def test_dashboards_import_only_harness_results_and_plotting() -> None:
    bad = {
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "dashboards").glob("*.py"))
        for name in _imports(path)
        if not _allowed(name) and name not in KNOWN_EXCEPTIONS.get(path.name, set())
    }
    assert not bad, sorted(bad)


def test_harness_never_imports_dashboards() -> None:
    bad = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "harness").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] == "dashboards"
    ]
    assert not bad


def test_sfh_report_comes_from_the_entry_point() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert subparsers.choices["report"].get_default("func").__module__ == "dashboards.cli", ENTRY_POINTS
