"""Budgets as people write them: numbers in [0, 1] pixel scale or k/255 grey levels."""

from __future__ import annotations

import pytest

from robustcars.errors import ConfigError
from robustcars.evaluation.suite import load_suite
from robustcars.registry import check_eps, parse_eps

from .conftest import invoke_cli


@pytest.mark.parametrize(("text", "value"), [("0.01", 0.01), ("4/255", 4 / 255), (" 0.5/255 ", 0.5 / 255),
                                             ("1e-3", 0.001), ("255/255", 1.0)])
def test_parse_eps(text, value):
    assert parse_eps(text) == value


@pytest.mark.parametrize("text", ["abc", "4/256", "4/", "/255", "1/2"])
def test_parse_eps_refuses_other_notations(text):
    with pytest.raises(ConfigError, match="k/255"):
        parse_eps(text)


def test_check_eps_takes_grey_levels_and_still_bounds_them():
    assert check_eps(["2/255", 0.01]) == [2 / 255, 0.01]
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        check_eps(["300/255"])


def test_a_suite_may_write_its_budgets_as_grey_levels(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[[attack]]\nname = "fgsm"\neps = ["1/255", "4/255"]\n')
    assert load_suite(path).entries[0].eps == [1 / 255, 4 / 255]


def test_the_cli_reads_k_over_255_and_names_a_bad_budget(tmp_path):
    r = invoke_cli("attack", "--run", tmp_path, "--eps", "1/256")
    assert r.exit_code == 2 and "Invalid value for '--eps'" in r.output and "k/255" in r.output
