"""Progress as JSON-lines events: what a training job writes, and the web job page computing its progress from
the events alone (never from the console text)."""

from __future__ import annotations

import json
import os

import pytest

from robustcars.progress import JsonLinesEvents, read_events, training_progress
from robustcars.web.jobs import EVENTS_NAME, Job, JobManager

from .conftest import train_tiny_run


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_advance_events_are_throttled_but_a_finished_phase_is_always_written(tmp_path):
    clock = Clock()
    ev = JsonLinesEvents(tmp_path / "e.jsonl", interval=1.0, clock=clock)
    advance = ev.phase("epoch 1/2 train", 10, phase="train", epoch=1, epochs=2)
    for _ in range(3):  # no time passes: nothing written
        advance(2)
    clock.t += 1.5
    advance(2)  # 8/10 after 1.5 s: written
    advance(2)  # 10/10: the phase is done, written at once
    events = read_events(tmp_path / "e.jsonl")
    assert [(e["event"], e.get("done")) for e in events] == [("phase", None), ("advance", 8), ("advance", 10)]
    assert training_progress(events[:2]) == pytest.approx(0.8 * 0.9 / 2)


def test_progress_of_known_event_sequences():
    def adv(phase, epoch, done, total, epochs=4):
        return {"event": "advance", "phase": phase, "epoch": epoch, "epochs": epochs, "done": done, "total": total}

    assert training_progress([]) == 0.0
    assert training_progress([adv("train", 1, 50, 100)]) == pytest.approx(0.45 / 4)
    assert training_progress([adv("val", 2, 10, 20)]) == pytest.approx((1 + 0.95) / 4)
    assert training_progress([adv("val", 4, 20, 20), {"event": "phase", "phase": "test", "total": 5}]) == 1.0
    assert training_progress([adv("train", 1, 1, 2), {"event": "end"}]) == 1.0


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps({"event": "start", "info": {}}) + "\n" + '{"event": "adv')
    assert [e["event"] for e in read_events(path)] == ["start"]
    assert read_events(tmp_path / "missing.jsonl") == []


def test_a_training_run_writes_its_events(tmp_path):
    _, run = train_tiny_run(tmp_path, epochs=2, extra=("--events", tmp_path / "events.jsonl"))
    events = read_events(tmp_path / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2
    epochs = [e["row"]["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs == [1, 2]
    done = [e for e in events if e["event"] == "advance" and e["phase"] == "train"]
    finished = {(e["epoch"], e["done"], e["total"]) for e in done if e["done"] == e["total"]}
    assert finished == {(1, 16, 16), (2, 16, 16)}  # 18 images in batches of 8, the last one dropped
    assert events[0]["info"]["arch"] == "resnet18" and training_progress(events) == 1.0


def test_the_job_page_reads_events_not_the_log(tmp_path):
    run = tmp_path / "runs" / "job"
    run.mkdir(parents=True)
    # console lines in any wording: the page must not depend on them
    (run / "train.log").write_text("Epoche 1 von 4, Training: 90 von 100 Bildern\n")
    (run / EVENTS_NAME).write_text(json.dumps({"event": "advance", "phase": "train", "epoch": 2, "epochs": 4,
                                               "done": 50, "total": 100}) + "\n")
    Job("job", str(run), [], pid=os.getpid()).save()
    status = JobManager(tmp_path / "runs").status("job")
    assert status["state"] == "running" and status["progress"] == pytest.approx((1 + 0.45) / 4)
    assert status["log"] == ["Epoche 1 von 4, Training: 90 von 100 Bildern"]
