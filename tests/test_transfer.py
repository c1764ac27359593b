"""robustcars transfer: saved examples re-scored on other models, as ordinary attack folders."""

from __future__ import annotations

import json

import pytest

from robustcars.reporting.results import load_attack

from .conftest import invoke_cli, train_tiny_run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    data, run = train_tiny_run(root)
    r = invoke_cli("train", "--data", data, "--out", root / "other", "--arch", "resnet18", "--weights", "none",
                   "--epochs", 1, "--img-size", 32, "--batch-size", 8, "--workers", 0, "--seed", 1)
    assert r.exit_code == 0, r.output
    r = invoke_cli("attack", "--run", run, "--attack", "pgd", "--eps", 0.01, "--eps", 0.05, "--steps", 3,
                   "--out", root / "pgd", "--save-adv", "--workers", 0, "--examples", 0)
    assert r.exit_code == 0, r.output
    return root, data, run


def test_a_models_own_examples_transfer_to_it_with_its_own_robust_accuracy(source):
    root, _, run = source
    r = invoke_cli("transfer", root / "pgd", "--run", run, "--out", root / "self")
    assert r.exit_code == 0, r.output
    assert "scoring on resnet18 (run)" in r.output  # progress in plain lines when not on a terminal
    own, back = load_attack(root / "pgd"), load_attack(root / "self")
    assert [row["accuracy"] for row in back.meta["rows"]] == [row["accuracy"] for row in own.meta["rows"]]
    assert [[a["pred"] for a in rec["adv"]] for rec in back.records] == \
        [[a["pred"] for a in rec["adv"]] for rec in own.records]
    assert back.meta["transfer"]["source"] == str((root / "pgd").resolve())
    assert json.loads((root / "self" / "model_card.json").read_text())["results"]["clean_accuracy"] == \
        own.meta["rows"][0]["accuracy"]


def test_transfer_to_several_targets_writes_one_folder_each(source):
    root, _, run = source
    r = invoke_cli("transfer", root / "pgd", "--run", run, "--run", root / "other")
    assert r.exit_code == 0, r.output
    for name in ("run", "other"):
        meta = load_attack(root / "pgd" / "transfer" / name).meta
        assert meta["run"]["checkpoint"].startswith(str((root / name).resolve()))
        assert len(meta["rows"]) == 3


def test_bad_targets_are_refused_before_anything_is_written(source, tmp_path):
    root, data, run = source
    small = tmp_path / "small"
    r = invoke_cli("train", "--data", data, "--out", small, "--arch", "resnet18", "--weights", "none", "--epochs", 1,
                   "--img-size", 16, "--batch-size", 8, "--workers", 0)
    assert r.exit_code == 0, r.output
    r = invoke_cli("transfer", root / "pgd", "--run", run, "--run", small, "--out", tmp_path / "a", "--out",
                   tmp_path / "b")
    assert r.exit_code == 2 and "32x32 px" in r.output and "takes 16 px" in r.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # the first target was not scored
    r = invoke_cli("transfer", run, "--run", run, "--out", tmp_path / "d")
    assert r.exit_code == 2 and "not a finished attack folder" in r.output


def test_an_attack_without_saved_examples_is_refused(source, tmp_path):
    root, _, run = source
    r = invoke_cli("attack", "--run", run, "--eps", 0.01, "--out", tmp_path / "fgsm", "--workers", 0,
                   "--examples", 0)
    assert r.exit_code == 0, r.output
    r = invoke_cli("transfer", tmp_path / "fgsm", "--run", run)
    assert r.exit_code == 2 and "--save-adv" in r.output


def test_the_report_draws_the_transfer_matrix(source, tmp_path):
    root, _, run = source
    r = invoke_cli("transfer", root / "pgd", "--run", root / "other", "--out", tmp_path / "to-other")
    assert r.exit_code == 0, r.output
    r = invoke_cli("report", root / "pgd", tmp_path / "to-other", "--out", tmp_path / "report", "--panels", "none")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (matrix,) = report["transfer"]
    own, other = load_attack(root / "pgd").meta, load_attack(tmp_path / "to-other").meta
    assert matrix["eps"] == [0.01, 0.05]
    assert [row["accuracy"] for row in matrix["rows"]] == [[r["accuracy"] for r in own["rows"][1:]],
                                                          [r["accuracy"] for r in other["rows"][1:]]]
    assert (tmp_path / "report" / report["transfer_figure"]).is_file()
    assert "Transfer: examples made on one model" in (tmp_path / "report" / "report.md").read_text()


def test_a_relative_target_is_recorded_resolved(source, tmp_path, monkeypatch):
    root, _, run = source
    monkeypatch.chdir(root)
    r = invoke_cli("transfer", "pgd", "--run", "other", "--out", tmp_path / "rel")
    assert r.exit_code == 0, r.output
    meta = load_attack(tmp_path / "rel").meta
    assert meta["run"]["checkpoint"] == str((root / "other" / "best.pt").resolve())
    assert f"--run {(root / 'other' / 'best.pt').resolve()}" in meta["reproduce"]
