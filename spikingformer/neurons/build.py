"""The fused LIF's CPU kernels (``csrc/lif.cpp``), built at first use by ``torch.utils.cpp_extension.load``.

At first use, not at install: the project installs as plain Python (an editable install, Ray workers importing
the checkout), a wheel built once would carry one machine's instruction set, and only runs that ask for the
fused LIF on a CPU need a compiler. The build (about 40 s on a 2-core CPU) lands in torch's extension cache,
``~/.cache/torch_extensions/<python, cuda tag>/`` (torch honours ``TORCH_EXTENSIONS_DIR``), in a folder named
by a hash of the source and flags: every later process, and every checkout with the same source, loads the
built library in milliseconds, an edited source builds beside it, and concurrent first users wait on torch's
file lock for one build.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("csrc") / "lif.cpp"
#: No FMA contraction and no fast-math: the forward rounds every operation as torch does (bit-identical spikes).
#: ``-march=native`` doubles the backward's speed (AVX2 against SSE2 here); the last two flags only let the
#: loops' selects vectorize.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]


class KernelBuildError(RuntimeError):
    """The CPU kernels could not be built or loaded on this machine: what failed, and how to fix it."""


def _cpu_features() -> str:
    """The processor's feature flags (Linux), so a cache shared between machines never loads a foreign build."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line for line in lines if line.startswith(("flags", "Features"))), "")


def extension_name() -> str:
    """``spikingformer_lif_<hash>``: a new name (and cache folder) for every source, flags and processor."""
    key = "\0".join([SOURCE.read_text(), *FLAGS, platform.machine(), _cpu_features()])
    return f"spikingformer_lif_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@functools.cache
def _load() -> ModuleType | KernelBuildError:
    """Build (once per machine) and import the extension; a failure is kept, so it is not retried per call."""
    # Importing it on a host without CUDA warns "No CUDA runtime is found": true, and nothing to do with a CPU build.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        return cpp_extension.load(extension_name(), [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"])
    except Exception as err:  # a missing compiler, ninja or header surfaces as several exception types
        return KernelBuildError(
            f"fused LIF: building its CPU kernels ({SOURCE}) with torch.utils.cpp_extension failed: "
            f"{str(err).strip()[-2000:]}\nFix: install a C++ compiler with OpenMP and ninja (Debian: "
            "apt-get install g++ ninja-build) and the Python headers, or set runtime.lif_backend to "
            "'spikingjelly' (or 'auto', which falls back to it)."
        )


def extension() -> ModuleType:
    """The built kernels (``forward``, ``backward``); raises ``KernelBuildError`` where they cannot be built."""
    loaded = _load()
    if isinstance(loaded, KernelBuildError):
        raise KernelBuildError(str(loaded))
    return loaded
