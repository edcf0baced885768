"""Stopping a run at the next step boundary with a checkpoint, when asked (SIGTERM, a scheduler, a driver).

Slurm, Kubernetes and spot instances send SIGTERM some seconds before they kill; a per-epoch checkpoint would
then lose up to a whole epoch. A :class:`StopRequest` is the one flag the engine looks at after every optimizer
update: anything may set it (:func:`stop_on_signals` from a signal handler, a launcher from a thread), and the
engine then writes an in-epoch checkpoint at that boundary on every rank at once and raises :class:`Preempted`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


class StopRequest:
    """A thread- and signal-safe "checkpoint now and stop" flag, with the reason given first.

    ``pollers`` are asked as well (at most as often as the engine checks, i.e. once per update): a launcher
    adds one that reads a flag set elsewhere (another process, a cluster's key-value store).
    """

    def __init__(self, pollers: tuple[Callable[[], str | None], ...] = ()) -> None:
        self._event = threading.Event()
        self._reason = ""
        self._pollers = pollers

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    def requested(self) -> bool:
        """True once stopping was asked for, here or by a poller."""
        if not self._event.is_set():
            for poll in self._pollers:
                reason = poll()
                if reason:
                    self.set(reason)
                    break
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason


class Preempted(Exception):  # noqa: N818 - not an error: the run stopped where it was asked to
    """The run stopped at a step boundary after writing ``checkpoint`` (rank 0; None elsewhere): resume from it."""

    def __init__(self, reason: str, epoch: int, batches: int, checkpoint: Path | None) -> None:
        self.reason, self.epoch, self.batches, self.checkpoint = reason, epoch, batches, checkpoint
        where = f" ({checkpoint})" if checkpoint is not None else ""
        super().__init__(f"stopped ({reason}) after {batches} batch(es) of epoch {epoch}, checkpointed{where}")

    def __reduce__(self) -> tuple:  # crosses process boundaries (a launcher gathers its workers' exceptions)
        return type(self), (self.reason, self.epoch, self.batches, self.checkpoint)


#: The signals that ask a run to stop soon: what batch systems and orchestrators send before a kill.
STOP_SIGNALS = (signal.SIGTERM,)


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """While inside, ``signals`` set ``stop`` instead of ending the process; the previous handlers come back
    after. Only the main thread may install handlers: elsewhere nothing is installed (the caller's own
    mechanism must set ``stop``)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(sig: int, frame: object) -> None:
        stop.set(f"{signal.Signals(sig).name} received")

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
