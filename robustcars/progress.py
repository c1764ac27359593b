"""Progress as events for machines: JSON lines, one object a line, appended and flushed as they happen.

A long job (``robustcars train --events FILE``) writes::

    {"event": "start", "time": 1733130000.0, "info": {...}}                 what runs, on what
    {"event": "phase", "time": ..., "phase": "train", "epoch": 1, "epochs": 10, "total": 4893}
    {"event": "advance", "time": ..., "phase": "train", "epoch": 1, "epochs": 10, "done": 640, "total": 4893}
    {"event": "epoch", "time": ..., "row": {...}, "improved": true}          one history.csv row
    {"event": "end", "time": ...}

Readers (the web app's job page) compute progress from these fields, never from the console text, so the
wording of a terminal line can change freely. ``advance`` events are written at most once per ``interval``
seconds and always when a phase completes. A torn last line (the writer was killed mid-write) is skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class JsonLinesEvents:
    """Appends events to ``path``; a training reporter (``start``/``phase``/``end_phase``/``epoch``/``end``)."""

    def __init__(self, path: str | Path, interval: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.path, self.interval, self.clock = Path(path), interval, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": round(self.clock(), 3), **fields}, default=float)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def start(self, info: dict[str, Any]) -> None:
        self.emit("start", info=info)

    def phase(self, name: str, total: int, **where: Any) -> Callable[[int], None]:
        self.emit("phase", **where, total=total)
        state = {"done": 0, "last": self.clock()}

        def advance(n: int) -> None:
            state["done"] += n
            now = self.clock()
            if state["done"] >= total or now - state["last"] >= self.interval:
                state["last"] = now
                self.emit("advance", **where, done=state["done"], total=total)
        return advance

    def end_phase(self) -> None: ...

    def epoch(self, row: dict[str, float], improved: bool) -> None:
        self.emit("epoch", row=row, improved=improved)

    def end(self) -> None:
        self.emit("end")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The events of ``path`` in order ([] when it does not exist); a torn or foreign line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "event" in event:
            out.append(event)
    return out


def training_progress(events: list[dict[str, Any]]) -> float:
    """Share of a training job done, in [0, 1], from its last ``phase``/``advance`` event: an epoch counts as
    90 % training and 10 % validation."""
    for e in reversed(events):
        if e["event"] in ("phase", "advance") and "epoch" in e and "epochs" in e:
            frac = e.get("done", 0) / max(e["total"], 1)
            part = frac * 0.9 if e["phase"] == "train" else 0.9 + 0.1 * frac
            return min(1.0, (e["epoch"] - 1 + part) / e["epochs"])
        if e["event"] == "end":
            return 1.0
    return 0.0


class Tee:
    """Several reporters as one: every call goes to each, in order; ``phase`` returns one advance for all."""

    def __init__(self, *reporters: Any) -> None:
        self.reporters = reporters

    def start(self, info: dict[str, Any]) -> None:
        for r in self.reporters:
            r.start(info)

    def phase(self, name: str, total: int, **where: Any) -> Callable[[int], None]:
        calls = [r.phase(name, total, **where) for r in self.reporters]

        def advance(n: int) -> None:
            for c in calls:
                c(n)
        return advance

    def end_phase(self) -> None:
        for r in self.reporters:
            r.end_phase()

    def epoch(self, row: dict[str, float], improved: bool) -> None:
        for r in self.reporters:
            r.epoch(row, improved)

    def end(self) -> None:
        for r in self.reporters:
            getattr(r, "end", lambda: None)()
