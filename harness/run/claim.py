"""One driver per experiment in the tracking store too: a claim in MLflow, whatever the storage folder.

The lock file (:mod:`harness.run.lock`) guards one storage folder; two drivers with different ``--storage`` (or
on machines that share no disk) but one MLflow store would still train every trial twice into the same runs.
So before training, a driver also claims the experiment in the store itself. MLflow keeps experiment names
unique in every backend (sqlite, PostgreSQL, a ``mlflow server``), so creating the experiment
``sfh-claim/<name>`` is an atomic test-and-set: exactly one of two drivers creates it. The claim carries its
holder (host, pid, since, command) in its tags, created with it, and a heartbeat tag the holder refreshes every
:data:`~harness.run.lock.HEARTBEAT_S`. A claim is stale once its holder's pid is gone from this host or its
heartbeat is older than :data:`~harness.run.lock.STALE_AFTER_S`; the next driver then renames it aside (by id,
so a claim made meanwhile is never touched) and claims anew. Released claims are renamed aside and deleted.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from harness.run import lock
from harness.run.lock import HEARTBEAT_S, STALE_AFTER_S, Holder, LockHeld
from harness.tracking import Tracking

PREFIX = "sfh-claim/"
HOLDER_TAG = "sfh.claim."
HEARTBEAT_TAG = "sfh.claim.heartbeat"


def _holder(experiment: Experiment) -> Holder | None:
    tags = experiment.tags
    try:
        values = {f.name: tags[HOLDER_TAG + f.name] for f in dataclasses.fields(Holder)}
        started = values["pid_started"]
        return Holder(**{**values, "pid": int(values["pid"]), "pid_started": int(started) if started else None})
    except (KeyError, ValueError):
        return None


def stale_reason(experiment: Experiment, *, stale_after: float = STALE_AFTER_S) -> str | None:
    """Why the claim no longer protects a live driver, or None while its holder is alive."""
    holder = _holder(experiment)
    try:
        age = time.time() - float(experiment.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return "it has no holder or heartbeat" if holder is None else None
    if holder is not None and holder.alive_here() is False:
        return f"its holder ({holder.describe()}) is no longer running"
    if age > stale_after:
        who = holder.describe() if holder is not None else "an unknown holder"
        return f"its holder ({who}) has not refreshed it for {age:.0f} s (> {stale_after:.0f} s)"
    return None


class TrackingClaim:
    """The claim of experiment ``name`` in the MLflow store of ``client``, held between acquire and release."""

    def __init__(self, client: object, name: str, what: str, *, heartbeat: float = HEARTBEAT_S,
                 stale_after: float = STALE_AFTER_S) -> None:
        self.client, self.name, self.what = client, PREFIX + name, what
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.me = Holder.me()
        self.experiment_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        tags = {HOLDER_TAG + k: "" if v is None else str(v) for k, v in dataclasses.asdict(self.me).items()}
        tags[HEARTBEAT_TAG] = str(time.time())
        try:
            self.experiment_id = self.client.create_experiment(self.name, tags=tags)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return False
        return True

    def acquire(self) -> None:
        """Claim now or raise :class:`~harness.run.lock.LockHeld`; a stale claim is taken over with a warning."""
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return
            current = self.client.get_experiment_by_name(self.name)
            if current is None:
                continue  # released meanwhile
            reason = stale_reason(current, stale_after=self.stale_after)
            if reason is None:
                raise LockHeld(self._refusal(_holder(current)))
            self._aside(current.experiment_id, "stale")
            print(f"warning: taking over the claim of {self.what} in the tracking store: {reason}", file=sys.stderr,
                  flush=True)
        raise LockHeld(self._refusal(None))

    def _aside(self, experiment_id: str, why: str) -> None:
        """Free the claim's name: rename that experiment (by id) and delete it."""
        try:
            self.client.rename_experiment(experiment_id, f"sfh-claim-{why}/{self.name}/{self.me.token}")
            self.client.delete_experiment(experiment_id)
        except MlflowException:
            pass  # another driver moved it first

    def _refusal(self, holder: Holder | None) -> str:
        who = holder.describe() if holder is not None else "a driver that is claiming it right now"
        return (
            f"{self.what} is already running against this MLflow store (claim {self.name!r} held by {who}), "
            f"possibly with another --storage or on another machine; two drivers would train every trial twice "
            f"into the same MLflow runs. Wait for it to end, or stop it and continue with `sfh resume` there. A "
            f"claim whose driver died is taken over: on its own host at once, elsewhere after "
            f"{self.stale_after:.0f} s without a heartbeat."
        )

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat):
                try:
                    self.client.set_experiment_tag(self.experiment_id, HEARTBEAT_TAG, str(time.time()))
                except MlflowException:
                    continue  # a store that hiccups: the next beat tries again

        self._thread = threading.Thread(target=beat, name="sfh-claim-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and give the claim up, if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = self.client.get_experiment_by_name(self.name)
        if current is not None and current.experiment_id == self.experiment_id:
            self._aside(current.experiment_id, "released")


@contextmanager
def hold(client: object, name: str, what: str) -> Iterator[TrackingClaim]:
    """Hold the tracking-store claim of experiment ``name`` for the block (``what`` names it in messages)."""
    claim = TrackingClaim(client, name, what)
    claim.acquire()
    try:
        yield claim
    finally:
        claim.release()


@contextmanager
def held(storage: str, name: str, what: str, tracking_uri: str) -> Iterator[Tracking]:
    """Experiment ``name``'s lock in its storage folder, then its claim in the tracking store, for the block;
    yields the store. Either one held elsewhere refuses with :class:`~harness.run.lock.LockHeld`."""
    with lock.hold(storage, name, what):
        store = Tracking(tracking_uri)
        with hold(store.client, name, what):
            yield store
