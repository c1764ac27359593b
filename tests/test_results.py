"""Typed results read back what the writers wrote: rows, checks, attack and suite summaries."""

from __future__ import annotations

import json

import pytest

from robustcars.reporting.results import AttackSummary, Row, SuiteSummary, split_rows
from tests.golden.make import EXPECTED

ATTACKS = sorted(EXPECTED.glob("**/attack.json"))


@pytest.mark.parametrize("path", ATTACKS, ids=lambda p: str(p.parent.relative_to(EXPECTED)))
def test_rows_round_trip_and_the_clean_row_is_found_by_its_kind(path):
    d = json.loads(path.read_text())
    for r in d["rows"]:
        assert Row.from_dict(r).to_dict() == r
    s = AttackSummary.from_dict(d)
    assert s.clean.is_clean and s.clean.to_dict() == d["clean"]
    assert [r.eps for r in s.rows] == d["threat_model"]["eps"]
    assert all(not r.is_clean for r in s.rows) and len(s.checks) == len(d["checks"])
    assert s.robust_accuracy(s.eps[-1]) == d["rows"][-1]["accuracy"]


def test_split_rows_does_not_depend_on_position():
    rows = [{"attack": "pgd", "eps": 0.01, "accuracy": 0.2}, {"attack": "clean", "eps": 0.0, "accuracy": 0.9},
            {"attack": "fgsm", "eps": 0.01, "accuracy": 0.4}]
    clean, adv = split_rows(rows)
    assert clean["accuracy"] == 0.9 and [r["attack"] for r in adv] == ["pgd", "fgsm"]
    assert split_rows(rows[:1]) == (None, rows[:1])


def test_suite_summary_worst_case():
    d = json.loads((EXPECTED / "suite-goldcascade" / "suite.json").read_text())
    s = SuiteSummary.from_dict(d)
    assert s.name == "goldcascade" and [w.eps for w in s.worst_case] == [0.002, 0.01]
    assert s.worst_case_accuracy(0.01) == d["worst_case"][1]["accuracy"]
    with pytest.raises(KeyError, match="no worst case at l2 eps 0.01"):
        s.worst_case_accuracy(0.01, norm="l2")
