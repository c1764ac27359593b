"""What the terminal prints, as a person reads it."""

from __future__ import annotations


def test_undefined_numbers_read_as_a_dash():
    from robustcars.console import fmt

    assert [fmt(None), fmt(float("nan")), fmt(0.12345), fmt(3)] == ["–", "–", "0.1235", "3"]
