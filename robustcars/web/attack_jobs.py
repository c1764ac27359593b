"""Long attacks on one photo as jobs of the web app, so that a slow attack never blocks a prediction.

An attack that may take more than a few seconds (:func:`robustcars.registry.runs_long`: C&W, EAD, HopSkipJump,
AutoAttack's, many-step iterative ones) runs in a thread of its own on a private copy of the model, outside the
lock that serializes the quick requests; the page polls its state, and its model calls and seconds so far are its
progress. At most one attack job runs at a time (another is refused with :class:`AttackBusy`, HTTP 409); cancel
stops it at its next model call; past its time limit it stops the same way and is ``failed``. The last
:data:`KEEP` jobs are kept in memory (a restarted server has none).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robustcars.errors import RobustcarsError

KEEP = 20  # finished jobs kept for their results


class AttackBusy(RobustcarsError):
    """Another attack job is running."""


class UnknownAttackJob(RobustcarsError):
    """No attack job of that id."""


@dataclass
class AttackJob:
    """One attack on one photo. ``stop`` ends it at its next model call; ``calls`` counts its model calls
    (forward passes of a batch of one), set by the model wrapper that runs it."""

    id: str
    info: dict[str, Any]
    seconds: float  # its time limit
    state: str = "running"  # running | done | failed | cancelled
    started: float = field(default_factory=time.monotonic)
    elapsed: float | None = None
    calls: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        """What the page shows: state, model calls and seconds so far, the error or the result."""
        seconds = self.elapsed if self.elapsed is not None else time.monotonic() - self.started
        return {"job": self.id, **self.info, "state": self.state, "model_calls": self.calls,
                "seconds": round(seconds, 2), "limit_seconds": self.seconds, "error": self.error,
                "result": self.result}


class AttackJobs:
    """The attack jobs of one server."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.jobs: OrderedDict[str, AttackJob] = OrderedDict()
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, work: Callable[[AttackJob], dict[str, Any]], info: dict[str, Any]) -> AttackJob:
        """Run ``work(job)`` in a thread; its return value is the job's result, a RobustcarsError its error.

        Raises:
            AttackBusy: an attack job is running already.
        """
        with self.lock:
            running = [j for j in self.jobs.values() if j.state == "running"]
            if running:
                raise AttackBusy(f"attack job {running[0].id} is still running; wait for it or cancel it")
            job = AttackJob(f"attack-{next(self._ids)}", info, self.seconds)
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP:
                self.jobs.popitem(last=False)
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=job.id).start()
        return job

    def _run(self, job: AttackJob, work: Callable[[AttackJob], dict[str, Any]]) -> None:
        try:
            job.result, state = work(job), "done"
        except RobustcarsError as exc:
            job.error, state = str(exc), "cancelled" if job.stop.is_set() else "failed"
        except Exception as exc:  # a bug: the job says so instead of hanging as running
            job.error, state = f"internal error: {exc.__class__.__name__}: {exc}", "failed"
        job.elapsed = time.monotonic() - job.started
        job.state = state

    def get(self, job_id: str) -> AttackJob:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise UnknownAttackJob(f"no attack job {job_id!r}") from None

    def cancel(self, job_id: str) -> AttackJob:
        job = self.get(job_id)
        job.stop.set()
        return job

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.stop.set()
