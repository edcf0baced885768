"""The repository stands alone: no code, doc, test or help text names a file outside it.

A fresh clone has nothing beside it, so whatever a user (or a test) needs must be in the repository: reference data
as extracted files with their provenance (``reference/``, ``tests/golden/``), explanations in the project's own
words, citations as papers or upstream files. Three checks: no text names a known outside document or folder; no
``Path(__file__)`` climbs above the repository root; every relative Markdown link lands on a file inside it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from harness.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
#: Outside documents and folders that files once cited. The names are split so that this file does not match.
OUTSIDE = re.compile(
    "|".join([
        r"\.\./" + "shared", r"\b" + "shared/reference", r"\b" + "SPEC" + r"(?: §| section| \d)", r"\bSPEC's\b",
        "PEERS" + r"\.md", "STACK" + r"\.md", "DESIGN" + r"\.md", r"\(" + "PEERS" + r" [a-z]\)", "/work/",
        r'(?:\.parent|\])\s*/\s*"' + 'shared"', r"\b" + "shared_dir" + r"\b",
    ])
)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".html", ".json", ".sh", ""}
_CLIMB = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?(?P<chain>(?:\.parent)+|\.parents\[(?P<n>\d+)\])")
_MD_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?:#[^)]*)?\)")


def tracked_files() -> list[Path]:
    """The files a clone holds (git's list where there is one; else every file outside .git)."""
    listing = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, text=True)
    if listing.returncode == 0:
        paths = [REPO / name for name in listing.stdout.split("\0") if name]
    else:
        paths = [p for p in REPO.rglob("*") if ".git" not in p.parts]
    return [p for p in paths if p.is_file() and p.suffix in TEXT_SUFFIXES]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


def test_no_file_names_an_outside_document() -> None:
    found = []
    for path in tracked_files():
        name = path.relative_to(REPO).as_posix()
        if name == "tests/test_repository_stands_alone.py":
            continue
        found += [f"{name}:{i}: {line.strip()[:100]}" for i, line in enumerate(_text(path).splitlines(), 1)
                  if OUTSIDE.search(line)]
    assert not found, "outside files named:\n" + "\n".join(found)


def test_no_path_climbs_out_of_the_repository() -> None:
    found = []
    for path in tracked_files():
        if path.suffix != ".py":
            continue
        for match in _CLIMB.finditer(_text(path)):
            levels = int(match["n"]) + 1 if match["n"] is not None else match["chain"].count(".parent")
            target = path.parents[levels - 1] if levels <= len(path.parents) else Path("/")
            if not target.is_relative_to(REPO):
                found.append(f"{path.relative_to(REPO)}: {match[0]} is {target}")
    assert not found, "\n".join(found)


def test_markdown_links_stay_inside_and_exist() -> None:
    found = []
    for path in tracked_files():
        if path.suffix != ".md":
            continue
        for match in _MD_LINK.finditer(_text(path)):
            target = match["target"]
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                found.append(f"{path.relative_to(REPO)}: ({target})")
    assert not found, "links outside the repository or to nothing:\n" + "\n".join(found)


def _help_texts(parser: argparse.ArgumentParser) -> list[str]:
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [text for sub in action.choices.values() for text in _help_texts(sub)]
    return texts


def test_help_texts_name_nothing_outside(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``sfh`` help, including ``sfh energy``'s, which parses its own command line."""
    texts = _help_texts(build_parser())
    assert main(["energy", "--help"]) == 0
    texts.append(capsys.readouterr().out)
    assert len(texts) > 5
    assert not [t for t in texts if OUTSIDE.search(t)]
