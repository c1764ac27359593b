"""Training jobs of the web app: each is ``robustcars train`` in its own process, writing an ordinary run folder.

* The job's log is ``RUN/train.log`` (plain lines, no TTY), its progress ``RUN/events.jsonl`` (JSON-lines events,
  :mod:`robustcars.progress`: the page never parses the log) and its state ``RUN/job.json``; a job keeps
  running when the browser closes, and a server restarted after a crash shows a job that was running as
  ``interrupted`` (its process is gone), which :meth:`JobManager.resume` continues with ``--resume``.
* At most ``max_running`` jobs run at once (default 1): another start is refused with :class:`Busy`.
* Cancel sends SIGINT to the job's process group: training stops after saving what it finished (exit 130),
  so a cancelled job can be resumed too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustcars import storage as rio
from robustcars.errors import ConfigError, RobustcarsError
from robustcars.progress import read_events, training_progress

ACTIVE = ("running",)
RESUMABLE = ("interrupted", "cancelled", "failed")
EVENTS_NAME = "events.jsonl"  # the job's progress events (robustcars.progress), the page's progress bar


class Busy(RobustcarsError):
    """Another training job is running."""


class UnknownJob(RobustcarsError):
    """No job of that id."""


@dataclass
class Job:
    id: str
    run: str
    args: list[str]
    state: str = "running"
    pid: int | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    returncode: int | None = None

    def save(self) -> None:
        rio.write_json(Path(self.run) / "job.json", asdict(self))


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobManager:
    def __init__(self, runs_root: Path, max_running: int = 1) -> None:
        self.root = Path(runs_root)
        self.max_running = max_running
        self.jobs: dict[str, Job] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.cancelling: set[str] = set()  # cancelled by the user: "cancelled" whatever the exit code
        self._load()

    def _load(self) -> None:
        """Jobs of earlier servers: a job recorded as running whose process is gone is interrupted."""
        for path in sorted(self.root.glob("*/job.json")):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            if job.state in ACTIVE and not _alive(job.pid):
                job.state = "interrupted"
                job.save()
            self.jobs[job.id] = job

    def running(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state in ACTIVE]

    def start(self, run_name: str, args: list[str], *, resume: bool = False) -> Job:
        """Start ``robustcars train ARGS --out RUNS/run_name`` (``--resume`` to continue).

        Raises:
            Busy: ``max_running`` jobs run already; ConfigError: a new job into an existing run folder.
        """
        with self.lock:
            if len(self.running()) >= self.max_running:
                raise Busy(f"a training job is already running ({self.running()[0].id}); wait for it or cancel it")
            run = self.root / run_name
            if not resume and (run.exists() or run.is_symlink()):
                raise ConfigError(f"run {run_name!r} exists already; choose another name")
            run.mkdir(parents=True, exist_ok=True)
            events = ["--events", str(run / EVENTS_NAME)]
            argv = [sys.executable, "-m", "robustcars", "train", *args, "--out", str(run), *events]
            if resume:
                argv = [sys.executable, "-m", "robustcars", "train", "--out", str(run), "--resume", *events]
            log = open(run / "train.log", "ab")  # noqa: SIM115 - handed to the child, closed below
            env = {**os.environ, "ROBUSTCARS_PROGRESS_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
            finally:
                log.close()
            job = Job(run_name, str(run), args if not resume else self.jobs[run_name].args, pid=proc.pid)
            job.save()
            self.jobs[run_name], self.procs[run_name] = job, proc
        threading.Thread(target=self._wait, args=(job, proc), daemon=True).start()
        return job

    def _wait(self, job: Job, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        with self.lock:
            job.returncode, job.finished = rc, time.time()
            if rc == 0:
                job.state = "done"
            elif self.stopping:  # the server stopped it: resumable, shown as interrupted
                job.state = "interrupted"
            else:  # a SIGINT before training set up its handler ends the process another way: still cancelled
                job.state = "cancelled" if rc == 130 or job.id in self.cancelling else "failed"
            self.cancelling.discard(job.id)
            job.save()
            self.procs.pop(job.id, None)

    def listed(self) -> list[dict[str, Any]]:
        """Every job (id, state, start and end times), the running ones first, then the newest first."""
        order = sorted(self.jobs.values(), key=lambda j: (j.state not in ACTIVE, -j.started))
        return [{"id": j.id, "state": j.state, "started": j.started, "finished": j.finished} for j in order]

    def get(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise UnknownJob(f"no job {job_id!r}")
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in ACTIVE:
            raise ConfigError(f"job {job_id!r} is {job.state}, not running")
        self.cancelling.add(job_id)
        os.killpg(job.pid, signal.SIGINT)
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in RESUMABLE or not (Path(job.run) / "last.pt").is_file():
            raise ConfigError(f"job {job_id!r} is {job.state} and has no saved epoch to resume")
        return self.start(job_id, job.args, resume=True)

    def status(self, job_id: str, log_lines: int = 40) -> dict[str, Any]:
        """The job with its progress in [0, 1], the epochs of ``history.csv`` and the end of its log."""
        job = self.get(job_id)
        run = Path(job.run)
        log = (run / "train.log").read_text(encoding="utf-8", errors="replace") if (run / "train.log").is_file() else ""
        lines = log.splitlines()
        history = []
        if (run / "history.csv").is_file():
            history = rio.read_history(run / "history.csv")
        progress = training_progress(read_events(run / EVENTS_NAME))
        return {**asdict(job), "progress": 1.0 if job.state == "done" else progress,
                "history": history, "log": lines[-log_lines:]}

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop running jobs as Ctrl-C would (they stay resumable); called when the server stops."""
        self.stopping = True
        for proc in list(self.procs.values()):
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                continue
        deadline = time.time() + timeout
        for proc in list(self.procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
