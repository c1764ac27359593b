"""What an attack folder keeps between invocations: the resume state and the images its figures show.

* :class:`ResumeState` (``attack_state.json``, AutoAttack ``state.py`` habit): the configuration fingerprint a
  resumed run must match, the image count, and whether the attack finished. A finished attack is never
  rewritten by ``--resume``.
* :class:`KeptImages` (``kept.pt``): the clean and adversarial tensors of the example images and of the
  candidates for the most/least affected panel, taken from the scoring pass itself, so every figure shows
  the very images whose numbers are in ``records.jsonl`` — even for attacks with a random start, and across
  a resume. Saved atomically after each batch that changes it; loads with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustcars import storage as rio
from robustcars.errors import DataError
from robustcars.reporting.aggregate import extreme_candidates
from robustcars.reporting.results import read_json_file

STATE_NAME = "attack_state.json"
KEPT_NAME = "kept.pt"


@dataclass
class ResumeState:
    fingerprint: str
    config: dict[str, Any]
    total: int
    finished: bool = False

    def save(self, out: Path) -> None:
        rio.write_json(out / STATE_NAME, asdict(self))

    @classmethod
    def load(cls, out: Path) -> ResumeState | None:
        """The saved state, or None when there is none. Raises DataError for a damaged file."""

        path = out / STATE_NAME
        if not path.is_file():
            return None
        d = read_json_file(path, "attack state")
        try:
            return cls(str(d["fingerprint"]), dict(d["config"]), int(d["total"]), bool(d.get("finished", False)))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path} is damaged; remove {out} and rerun the attack") from None


@dataclass
class KeptImages:
    """Example images (every eps) and extreme-panel candidates (largest eps) with their records."""

    example_idx: set[int]
    k: int = 2
    examples: dict[int, dict[str, Any]] = field(default_factory=dict)
    extremes: dict[int, dict[str, Any]] = field(default_factory=dict)

    def update(self, records: list[dict[str, Any]], x: torch.Tensor, adv: list[torch.Tensor]) -> bool:
        """Take what this batch contributes (``records[i]`` is image ``x[i]``). Returns True when anything changed."""
        changed = False
        for i, rec in enumerate(records):
            if rec["index"] in self.example_idx:
                self.examples[rec["index"]] = {"record": rec, "image": x[i].cpu(), "adv": [a[i].cpu() for a in adv]}
                changed = True
        if self.k == 0:  # no panels wanted: keep no images
            return changed
        pool = {r["index"]: (r, None) for r in (e["record"] for e in self.extremes.values())}
        pool.update({rec["index"]: (rec, i) for i, rec in enumerate(records)})
        keep = extreme_candidates([r for r, _ in pool.values()], len(adv) - 1, self.k)
        new = {}
        for idx in keep:
            rec, i = pool[idx]
            if i is None:  # kept from an earlier batch
                new[idx] = self.extremes[idx]
            else:
                new[idx] = {"record": rec, "image": x[i].cpu(), "adv": [adv[-1][i].cpu()]}
        changed |= new.keys() != self.extremes.keys()
        self.extremes = new
        return changed

    def save(self, path: Path) -> None:
        def pack(d: dict[int, dict[str, Any]]) -> dict[str, Any]:
            return {str(i): {"record": json.dumps(e["record"]), "image": e["image"], "adv": e["adv"]}
                    for i, e in d.items()}

        buf = io.BytesIO()
        torch.save({"examples": pack(self.examples), "extremes": pack(self.extremes)}, buf)
        rio.write_bytes(path, buf.getvalue())

    def load(self, paths: list[Path]) -> None:
        """Merge saved kept images (one file per process); a damaged file is a DataError."""
        for path in paths:
            try:
                d = torch.load(path, map_location="cpu", weights_only=True)
                for key, target in (("examples", self.examples), ("extremes", self.extremes)):
                    for i, e in d[key].items():
                        target[int(i)] = {"record": json.loads(e["record"]), "image": e["image"], "adv": list(e["adv"])}
            except Exception as exc:  # noqa: BLE001 - any unreadable file means the same here
                raise DataError(f"{path} is damaged ({exc.__class__.__name__}); delete it and rerun with --resume "
                                "(figures of images attacked before the resume are then lost)") from None
        if self.extremes:  # several processes' candidates: re-select among them
            records = [e["record"] for e in self.extremes.values()]
            keep = extreme_candidates(records, len(records[0]["adv"]) - 1, self.k)
            self.extremes = {i: e for i, e in self.extremes.items() if i in keep}
