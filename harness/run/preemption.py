"""SIGTERM to the driver stops every trial at its next optimizer update, with a checkpoint: not an epoch lost.

Slurm, Kubernetes and spot reclaims send SIGTERM some seconds before they kill. The driver then sets a flag in
the Ray cluster's key-value store, one key per experiment; every training rank polls it (at most every
:data:`POLL_S` seconds, through the engine's ``StopRequest``), so all ranks of a trial write one in-epoch
checkpoint at the same update and stop. A stopped trial ends KILLED in MLflow with where it stopped, and as an
error in Tune, so that ``sfh resume`` runs it again from that checkpoint; a trial that had not started yet is
stopped before it trains. ``sfh reproduce`` and ``sfh resume`` clear the flag when they start. A second SIGTERM
stops at once, as a second Ctrl-C does.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from ray import tune
from ray.experimental import internal_kv

#: Set when a SIGTERM reached the sweep of this process (its trials were asked to stop).
STOPPED = threading.Event()
#: Seconds between two looks at the flag by one rank (a key-value read is a round trip to Ray's GCS).
POLL_S = 2.0
#: The exit status of a command stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_STOPPED = 143


class TrialStopped(Exception):  # noqa: N818 - Tune records it as the trial's error, and resume runs the trial again
    """A trial stopped on request (its checkpoint written), or not started because a stop was requested."""


def _key(experiment: str) -> bytes:
    return f"sfh-stop:{experiment}".encode()


def request_stop(experiment: str, reason: str) -> None:
    internal_kv._internal_kv_put(_key(experiment), reason.encode(), overwrite=True)


def clear(experiment: str) -> None:
    """Forget an earlier request (a new command of the experiment starts)."""
    internal_kv._internal_kv_del(_key(experiment))


def requested(experiment: str) -> str | None:
    """Why ``experiment``'s trials must stop, or None."""
    value = internal_kv._internal_kv_get(_key(experiment))
    return value.decode() if value else None


class FlagPoller:
    """The engine's stop poller on a training rank: reads the experiment's flag at most every :data:`POLL_S`."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self.last = 0.0

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now - self.last < POLL_S:
            return None
        self.last = now
        return requested(self.experiment)


class StopOnSigterm(tune.Callback):
    """In the driver: the first SIGTERM asks every trial to checkpoint and stop; a second one is a Ctrl-C.

    ``setup`` runs in Tune's main thread once Tune has put in its own SIGINT handler. A restored Tuner brings
    back a pickled copy of this callback, hence the flag at module level.
    """

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment

    def setup(self, **info: Any) -> None:
        STOPPED.clear()
        if threading.current_thread() is not threading.main_thread():
            return
        tune_sigint = signal.getsignal(signal.SIGINT)
        experiment = self.experiment

        def on_sigterm(sig: int, frame: Any) -> None:
            if STOPPED.is_set() and callable(tune_sigint):
                tune_sigint(signal.SIGINT, frame)
                return
            STOPPED.set()
            request_stop(experiment, "SIGTERM to the driver")
            print(f"{experiment}: SIGTERM: every trial checkpoints at its next step and stops "
                  "(a second SIGTERM stops at once)", flush=True)

        signal.signal(signal.SIGTERM, on_sigterm)
