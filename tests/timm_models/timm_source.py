"""timm's own model tests, taken from the pinned timm release when the tests are collected: never kept here.

``pip download`` fetches the release's sdist into a cache folder (once per machine), its sha256 and that of
``tests/test_models.py`` inside it are checked, and the file is extracted to a temporary folder. Any failure
(no network to the package index, a changed file) stops collection with a message that says which: a test
run never goes on without timm's tests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import timm

VERSION = "1.0.31"
SDIST = f"timm-{VERSION}.tar.gz"
SDIST_SHA256 = "baa0b333339c46d3d6d4965d99b69f5053afed71210e8f433d7ea5ee6a18f0ec"
MEMBER = f"timm-{VERSION}/tests/test_models.py"
FILE_SHA256 = "ffb62c6df02601a96c2fda403723a7f96a806897ee061d1009c1f3135fb64eb7"
LICENSE = "Apache-2.0 (huggingface/pytorch-image-models)"


class TimmTestsUnavailable(RuntimeError):
    """timm's test file could not be had, or is not the pinned release's."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spikingformer-tests"


def sdist() -> Path:
    """The pinned release's sdist, downloaded into the cache the first time; its checksum checked every time."""
    path = cache_dir() / SDIST
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"timm=={VERSION}", "-d", str(path.parent)],
            capture_output=True, text=True,
        )
        if done.returncode or not path.is_file():
            raise TimmTestsUnavailable(f"pip could not download timm=={VERSION}'s sdist for timm's model tests "
                                       f"(exit {done.returncode}): {done.stderr.strip()[-500:]}")
    digest = _sha256(path.read_bytes())
    if digest != SDIST_SHA256:
        raise TimmTestsUnavailable(f"{path}: sha256 {digest}, expected {SDIST_SHA256} (remove it to download again)")
    return path


def timm_test_file() -> Path:
    """``tests/test_models.py`` of the pinned release, extracted to a temporary folder and checked."""
    if timm.__version__ != VERSION:
        raise TimmTestsUnavailable(f"timm {timm.__version__} is installed; these tests are pinned to {VERSION}")
    with tarfile.open(sdist()) as archive:
        data = archive.extractfile(MEMBER).read()
    if _sha256(data) != FILE_SHA256:
        raise TimmTestsUnavailable(f"{MEMBER} in {SDIST}: sha256 {_sha256(data)}, expected {FILE_SHA256}")
    path = Path(tempfile.mkdtemp(prefix="timm-tests-")) / "test_models.py"
    path.write_bytes(data)
    return path
