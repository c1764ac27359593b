"""What the terminal prints, as a person reads it."""

from __future__ import annotations


def test_undefined_numbers_read_as_a_dash():
    from robustcars.console import fmt

    assert [fmt(None), fmt(float("nan")), fmt(0.12345), fmt(3)] == ["–", "–", "0.1235", "3"]


def test_serve_refuses_a_data_root_that_is_not_there_before_creating_anything(tmp_path, monkeypatch):
    from .conftest import invoke_cli

    monkeypatch.chdir(tmp_path)
    r = invoke_cli("serve", "--data", tmp_path / "nowhere")
    assert r.exit_code == 2 and "--data" in r.output and "is not a folder" in r.output
    assert list(tmp_path.iterdir()) == []  # no runs/ or reports/ made
