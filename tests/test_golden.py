"""Outputs stay what they were: a tiny seeded run's records, rows and history against stored files.

The expected files were written by ``python -m tests.golden.make``; a difference here is a change of behaviour.
Every field is compared: text, integers (predictions, ranks, counts) and the structure exactly; real numbers of
the attacks' files (run on a seeded, untrained model: see ``tests/golden/make.py``) within ``rel 1e-4, abs 1e-5``,
since float sums differ in their last bits between CPUs and records are rounded to 6 digits; the training run's
files within ``rel 5e-2, abs 0.15`` (training amplifies those bits: losses 0.1-0.4 % apart between two machines
after two epochs; a score on its 9 validation images moves by 0.11 per image).
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from tests.golden.make import EXPECTED, FILES, normalized, produce


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    return produce(tmp_path_factory.mktemp("golden"))


def parsed(name: str, text: str):
    """A compared file as data: JSON, JSON lines, or CSV rows with numbers as numbers."""
    if name.endswith(".json"):
        return json.loads(text)
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines()]
    return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _number(v: str):
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


TRAINING = {"history.csv": (5e-2, 0.15), "metrics.json": (5e-2, 0.15)}
ATTACKS = (1e-4, 1e-5)


def differences(a, b, where: str = "", tol: tuple[float, float] = ATTACKS) -> list[str]:
    """Where ``a`` (written now) and ``b`` (expected) differ; floats within ``tol`` (relative, absolute) count as
    equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} differ"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}", tol)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items, expected {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]", tol)]
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and (
            math.isclose(a, b, rel_tol=tol[0], abs_tol=tol[1]) or (math.isnan(a) and math.isnan(b)))
        return [] if ok else [f"{where}: {a!r}, expected {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r}, expected {b!r}"]


@pytest.mark.parametrize("name", FILES)
def test_output_matches_the_stored_file(golden_run, name):
    now, expected = normalized(golden_run, name), (EXPECTED / name).read_text()
    found = differences(parsed(name, now), parsed(name, expected), tol=TRAINING.get(name, ATTACKS))
    assert not found, "\n".join(found[:10])


def test_the_comparison_catches_a_changed_prediction_and_forgives_the_last_bits():
    rec = {"pred": 3, "entropy": 1.234567, "adv": [{"eps": 0.01, "linf": 0.0099999}]}
    assert differences({**rec, "entropy": 1.234568}, rec) == []
    assert differences({**rec, "pred": 4}, rec) == [".pred: 4, expected 3"]
    assert differences({**rec, "entropy": 1.3}, rec) == [".entropy: 1.3, expected 1.234567"]
    assert differences({**rec, "adv": []}, rec) == [".adv: 0 items, expected 1"]
