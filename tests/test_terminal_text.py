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


def _words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[\w\-./'()\[\]=<>*+∞,:;%]+", re.sub(r"[│╭╮╰╯─]", " ", text)))


def test_help_on_an_80_column_terminal_is_grouped_and_splits_no_word(monkeypatch):
    """At 80 columns every word of the help of ``train``, ``attack`` and ``corrupt`` is one the 250-column help
    has too (a word cut in two would leave fragments), and training's options sit in their panels."""
    from typer import rich_utils
    from typer.testing import CliRunner

    from robustcars.cli.app import app

    def help_at(command: str, columns: int) -> str:
        monkeypatch.setattr(rich_utils, "MAX_WIDTH", columns)
        r = CliRunner().invoke(app, [command, "--help"])
        assert r.exit_code == 0, r.output
        return r.output

    for command in ("train", "attack", "corrupt"):
        narrow, wide = help_at(command, 80), help_at(command, 250)
        assert max(len(line) for line in narrow.splitlines()) <= 80
        fragments = _words(narrow) - _words(wide)
        assert not fragments, (command, sorted(fragments)[:10])
    titles = [line.strip("╭─╮ ") for line in help_at("train", 80).splitlines() if line.startswith("╭─")]
    assert {"Data", "Model", "Optimisation", "Adversarial training", "Distillation", "Output",
            "Performance"} <= set(titles), titles


def test_a_share_of_images_reads_as_a_percentage():
    from robustcars.console import min_norm_lines

    block = {"norm": "l2", "attacked": 8, "median": 0.5, "q25": 0.25, "q75": 1.0, "found_rate": 0.875}
    [line] = min_norm_lines({"kind": "robustcars-attack", "config": {"attack": "deepfool"}, "min_norms": block})
    assert line.endswith("adversarial found for 87.5 % of them") and "0.875" not in line
    [line] = min_norm_lines({"kind": "robustcars-attack", "config": {"attack": "deepfool"},
                             "min_norms": {**block, "attacked": 0, "found_rate": None}})
    assert line.endswith("adversarial found for – of them")
