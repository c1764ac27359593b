"""Natural corruptions: the images (shape, dtype, seeding), the refusals, CE / mCE by hand, resume after kill -9."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustcars.errors import ConfigError
from robustcars.registry import CORRUPTIONS, EXTRA_CORRUPTIONS

from .conftest import ROOT, cli_process, invoke_cli, kill_9_after, train_tiny_run

pytest.importorskip("imagecorruptions")

from robustcars.evaluation.corruptions import corrupt_image, corruption_errors, image_seed  # noqa: E402

ALL = [*CORRUPTIONS, *EXTRA_CORRUPTIONS]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(data, run)``: one generated dataset and ResNet-18 run (3 classes, 9 test images, 32 px); tests write
    their outputs elsewhere."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny"))
IMAGE = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ALL)
def test_every_corruption_keeps_shape_dtype_and_is_seeded(name):
    for severity in (1, 5):
        a = corrupt_image(IMAGE, name, severity, seed=7)
        assert a.dtype == np.uint8 and a.shape == IMAGE.shape
        assert np.array_equal(a, corrupt_image(IMAGE, name, severity, seed=7))  # same seed, same image
    weak, strong = corrupt_image(IMAGE, name, 1, seed=7), corrupt_image(IMAGE, name, 5, seed=7)
    assert not np.array_equal(weak, strong)  # the severity changes the image


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "snow", "frost"])
def test_the_seed_decides_the_random_corruptions(name):
    assert not np.array_equal(corrupt_image(IMAGE, name, 3, seed=1), corrupt_image(IMAGE, name, 3, seed=2))


def test_the_seed_of_an_image_depends_on_what_it_is_only():
    seeds = {image_seed(0, i, c, s) for i in range(20) for c in ALL for s in range(1, 6)}
    assert len(seeds) == 20 * len(ALL) * 5
    assert image_seed(3, 5, "fog", 2) == image_seed(3, 5, "fog", 2) != image_seed(4, 5, "fog", 2)


@pytest.mark.parametrize("name, severity, message", [
    ("fog", 0, "--severity must be in 1..5"),
    ("fog", 6, "--severity must be in 1..5"),
    ("rain", 3, "unknown corruption 'rain'; choose from: gaussian_noise"),
])
def test_bad_corruption_or_severity_is_refused(name, severity, message):
    with pytest.raises(ConfigError, match=message):
        corrupt_image(IMAGE, name, severity, seed=0)


def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
    for args, message in ((["--severity", 0], "error: --severity must be in 1..5"),
                          (["--corruption", "rain"], "error: unknown corruption 'rain'")):
        r = invoke_cli("corrupt", "--run", tmp_path, "--out", tmp_path / "c", *args)
        assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith(message), r.output
        assert "Traceback" not in r.output and not (tmp_path / "c").exists()


def _rows(acc: dict[tuple[str, int], float]) -> list[dict]:
    return [{"corruption": c, "severity": s, "accuracy": a} for (c, s), a in acc.items()]


def test_ce_and_mce_against_numbers_computed_by_hand():
    model = _rows({("fog", 1): 0.8, ("fog", 2): 0.6, ("contrast", 1): 0.9, ("contrast", 2): 0.5, ("spatter", 1): 0.7})
    ref = _rows({("fog", 1): 0.6, ("fog", 2): 0.2, ("contrast", 1): 0.8, ("contrast", 2): 0.6, ("spatter", 1): 0.5})
    clean, ref_clean = {"accuracy": 0.9, "images": 10}, {"accuracy": 0.8, "images": 10}
    e = corruption_errors(model, clean, {"rows": ref, "clean": ref_clean})
    assert e["mean_error"] == pytest.approx({"fog": 0.3, "contrast": 0.3, "spatter": 0.3})
    assert e["mean_corruption_error"] == pytest.approx(0.3)  # spatter is held out: not in the mean
    # CE_c = sum_s E / sum_s E_ref: fog (0.2 + 0.4) / (0.4 + 0.8), contrast (0.1 + 0.5) / (0.2 + 0.4)
    assert e["ce"] == pytest.approx({"fog": 0.5, "contrast": 1.0, "spatter": 0.6})
    assert e["mce"] == pytest.approx(0.75)
    # relative: sum_s (E - E_clean) / sum_s (E_ref - E_ref_clean); E_clean 0.1, E_ref_clean 0.2
    assert e["relative_ce"]["fog"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.6))
    assert e["relative_ce"]["contrast"] == pytest.approx((0.0 + 0.4) / (0.0 + 0.2))
    assert e["relative_mce"] == pytest.approx((0.5 + 2.0) / 2)
    # accuracy change, this model minus the reference: fog (0.2 + 0.4) / 2, contrast (0.1 - 0.1) / 2, spatter 0.2
    assert e["accuracy_change"] == pytest.approx({"fog": 0.3, "contrast": 0.0, "spatter": 0.2})
    assert e["clean_accuracy_change"] == pytest.approx(0.1)
    assert "ce" not in corruption_errors(model, clean)


def test_a_reference_of_other_images_is_refused():
    rows = _rows({("fog", 1): 0.5})
    from robustcars.errors import DataError

    with pytest.raises(DataError, match="the reference scored 20 images, this run 10"):
        corruption_errors(rows, {"accuracy": 0.9, "images": 10}, {"rows": rows, "clean": {"accuracy": 1, "images": 20}})
    with pytest.raises(DataError, match="the reference has no fog at severity 2"):
        corruption_errors(_rows({("fog", 2): 0.5}), {"accuracy": 0.9, "images": 10},
                          {"rows": rows, "clean": {"accuracy": 1, "images": 10}})


def test_kill_9_then_resume_gives_the_uninterrupted_records(tmp_path, tiny):
    _, run = tiny
    args = ["corrupt", "--run", run, "--corruption", "glass_blur", "--corruption", "impulse_noise", "--corruption",
            "fog", "--severity", 2, "--severity", 4, "--batch-size", 1, "--workers", 0, "--threads", 1]
    full = cli_process(*args, "--out", tmp_path / "full")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    records = tmp_path / "cut" / "records.jsonl"
    kill_9_after(cli_process(*args, "--out", tmp_path / "cut"), records, 2)
    assert records.read_text().count("\n") < 9, "the run finished before it could be killed"
    refused = cli_process(*args, "--out", tmp_path / "cut")
    assert refused.wait(timeout=300) == 2 and "pass --resume" in refused.stderr.read()
    resumed = cli_process(*args, "--out", tmp_path / "cut", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    key = lambda line: json.loads(line)["index"]  # noqa: E731
    full_lines = sorted((tmp_path / "full" / "records.jsonl").read_text().splitlines(), key=key)
    assert sorted(records.read_text().splitlines(), key=key) == full_lines
    a, b = (json.loads((tmp_path / d / "corruption.json").read_text()) for d in ("full", "cut"))
    assert a["rows"] == b["rows"] and a["errors"] == b["errors"] and b["cost"]["resumed_images"] >= 2
    # the standard model as its own reference: CE 1 for every corruption
    again = invoke_cli(*args, "--out", tmp_path / "self", "--reference", tmp_path / "full")
    assert again.exit_code == 0, again.output
    ref = json.loads((tmp_path / "self" / "corruption.json").read_text())["errors"]
    assert all(v in (1.0, None) for v in ref["ce"].values()) and "rel. CE" in again.output
    assert set(ref["accuracy_change"].values()) == {0.0} and "--reference" in json.loads(
        (tmp_path / "self" / "corruption.json").read_text())["reproduce"]
    assert {p.name for p in (tmp_path / "full" / "figures").iterdir()} == {
        "corruption_heatmap.png", "corruption_examples.png", "corruption_families.png"}
    assert (tmp_path / "self" / "figures" / "corruption_change.png").is_file()


def test_a_cache_gives_the_same_records_and_spares_the_second_run_the_corruptions(tmp_path, monkeypatch, tiny):
    import robustcars.evaluation.corruptions as corruptions

    _, run = tiny
    args = ["corrupt", "--run", run, "--corruption", "glass_blur", "--corruption", "fog", "--severity", 3,
            "--workers", 0, "--threads", 1]
    plain = invoke_cli(*args, "--out", tmp_path / "plain")
    first = invoke_cli(*args, "--out", tmp_path / "first", "--cache", tmp_path / "cache")
    assert plain.exit_code == 0 and first.exit_code == 0, plain.output + first.output
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 9 * 2  # 9 test images x 2 corruptions

    def no_corruption(*a, **k):
        raise AssertionError("a cached image was corrupted again")

    monkeypatch.setattr(corruptions, "corrupt_image", no_corruption)
    second = invoke_cli(*args, "--out", tmp_path / "second", "--cache", tmp_path / "cache")
    assert second.exit_code == 0, second.output
    lines = lambda d: (tmp_path / d / "records.jsonl").read_text()  # noqa: E731
    assert lines("first") == lines("plain") == lines("second")
    manifest = tmp_path / "cache" / "cache.json"
    manifest.write_text(manifest.read_text().replace('"img_size": 32', '"img_size": 64'))
    refused = invoke_cli(*args, "--out", tmp_path / "third", "--cache", tmp_path / "cache")
    assert refused.exit_code == 2 and "other settings: img_size 64 (here 32)" in refused.output
    assert not (tmp_path / "third").exists()


def test_any_model_under_corruptions_and_its_reproducing_command(tmp_path, tiny):
    """``--model`` (a torchvision net, random weights) on a class-folder dataset, as ``attack --model`` takes it."""
    data, run = tiny
    args = ["corrupt", "--model", "torchvision:resnet18", "--data", data, "--img-size", 32, "--resize", "squash",
            "--corruption", "fog", "--severity", 1, "--workers", 0, "--threads", 1]
    r = invoke_cli(*args, "--out", tmp_path / "any")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "any" / "corruption.json").read_text())
    assert result["run"]["arch"] == "torchvision:resnet18" and result["run"]["img_size"] == 32
    assert "--model torchvision:resnet18" in result["reproduce"]
    assert "--img-size 32 --resize squash" in result["reproduce"]
    refused = invoke_cli("corrupt", "--model", "torchvision:resnet18", "--img-size", 32, "--out", tmp_path / "none")
    assert refused.exit_code == 2 and "--model needs --data" in refused.output and not (tmp_path / "none").exists()
    mixed = invoke_cli("corrupt", "--run", run, "--img-size", 32, "--out", tmp_path / "mixed")
    assert mixed.exit_code == 2 and "go with --model" in mixed.output


def test_report_puts_corruptions_of_two_models_side_by_side(tmp_path, tiny):
    """``robustcars report`` takes a corruption folder or finds a run's corrupt/, and shows the numbers exactly as
    corruption.json holds them."""
    data, first = tiny
    second = tmp_path / "second"
    r = invoke_cli("train", "--data", data, "--out", second, "--arch", "resnet18", "--weights", "none", "--epochs", 2,
                   "--img-size", 32, "--batch-size", 8, "--workers", 0, "--seed", 1)
    assert r.exit_code == 0, r.output
    args = ["--corruption", "fog", "--corruption", "contrast", "--severity", 1, "--severity", 3, "--workers", 0]
    folders = [tmp_path / "first", second / "corrupt"]  # the second in its run's default folder
    for run, more in ((first, ["--out", folders[0]]), (second, ["--reference", folders[0]])):
        r = invoke_cli("corrupt", "--run", run, *args, *more)
        assert r.exit_code == 0, r.output
    r = invoke_cli("report", folders[0], second, "--out", tmp_path / "report", "--panels", "none")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    results = [json.loads((folder / "corruption.json").read_text()) for folder in folders]
    entries = {m["corruptions"][0]["dir"]: m["corruptions"][0] for m in report["models"]}
    for folder, result in zip(folders, results):
        c = entries[str(folder)]
        assert c["clean_accuracy"] == result["clean"]["accuracy"] and c["images"] == 9
        fog = [row["accuracy"] for row in result["rows"] if row["corruption"] == "fog"]
        assert c["per_corruption"][0]["corruption"] == "fog" and c["per_corruption"][0]["family"] == "weather"
        assert c["per_corruption"][0]["accuracy"] == pytest.approx(sum(fog) / 2)
        assert [s["severity"] for s in c["per_severity"]] == [1, 3]
        assert (tmp_path / "report" / c["figures"]["heatmap"]).read_bytes()[:4] == b"\x89PNG"
    c = entries[str(folders[1])]
    assert c["mce"] == results[1]["errors"]["mce"] and "change" in c["figures"]
    assert entries[str(folders[0])]["mce"] is None  # no reference, no CE
    comp = report["corruption_comparison"]  # the first model in the report is the baseline
    first = [str(f) for f in folders].index(report["models"][0]["corruptions"][0]["dir"])
    other = 1 - first
    change = results[other]["clean"]["accuracy"] - results[first]["clean"]["accuracy"]
    assert comp["rows"][0][0] == "clean" and comp["rows"][0][-1] == f"{change:+.4f}"
    assert [row[0] for row in comp["rows"]] == ["clean", "fog", "contrast"]
    rows = {row["model"]: row for row in report["comparison"]}  # the one-line-per-model table
    assert {row.get("mCE") for row in rows.values()} == {None, results[1]["errors"]["mce"]}
    assert sorted(row["mean corruption error"] for row in rows.values()) == sorted(
        r["errors"]["mean_corruption_error"] for r in results)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Natural corruptions side by side (9 test images" in md and "relative mCE" in md
    assert "robustcars corrupt --run" in md  # the reproducing command of each corruption result
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "robustcars" / "reporting" / "schemas" / "report.schema.json").read_text())
    jsonschema.validate(report, schema)


def test_a_suite_runs_corruptions_on_the_images_corrupt_scores(tmp_path, tiny):
    """A suite's [corruptions] gives the records ``robustcars corrupt`` gives with the same options; a bad table is
    refused before any attack runs."""
    _, run = tiny
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\n[[attack]]\nname = "fgsm"\neps = [0.01]\n'
                     '[corruptions]\ncorruptions = ["fog", "impulse_noise"]\nseverities = [2]\n')
    r = invoke_cli("attack", "--run", run, "--suite", suite, "--workers", 0, "--out", tmp_path / "suite")
    assert r.exit_code == 0, r.output
    assert "natural corruptions on 9 images: clean accuracy" in r.output
    alone = invoke_cli("corrupt", "--run", run, "--corruption", "fog", "--corruption", "impulse_noise", "--severity",
                       2, "--workers", 0, "--out", tmp_path / "alone")
    assert alone.exit_code == 0, alone.output
    lines = lambda d: (tmp_path / d / "records.jsonl").read_text()  # noqa: E731
    assert lines("suite/corrupt") == lines("alone")
    summary = json.loads((tmp_path / "suite" / "suite.json").read_text())["corruptions"]
    assert summary["images"] == 9 and summary["result"].endswith("suite/corrupt/corruption.json")
    again = invoke_cli("attack", "--run", run, "--suite", suite, "--workers", 0, "--out", tmp_path / "suite",
                       "--resume")
    assert again.exit_code == 0 and lines("suite/corrupt") == lines("alone"), again.output
    written = (tmp_path / "suite" / "suite.json").read_bytes()
    suite.write_text(suite.read_text().replace("severities = [2]", "severities = [3]"))
    changed = invoke_cli("attack", "--run", run, "--suite", suite, "--workers", 0, "--out", tmp_path / "suite",
                         "--resume")  # refused before the attacks, not after them
    assert changed.exit_code == 2 and "suite [corruptions]: " in changed.output, changed.output  # the precheck
    assert "different corruption configuration" in changed.output
    assert (tmp_path / "suite" / "suite.json").read_bytes() == written and lines("suite/corrupt") == lines("alone")
    report = invoke_cli("report", tmp_path / "suite", "--out", tmp_path / "rep", "--panels", "none")
    assert report.exit_code == 0, report.output
    (model,) = json.loads((tmp_path / "rep" / "report.json").read_text())["models"]
    assert [c["dir"] for c in model["corruptions"]] == [str(tmp_path / "suite" / "corrupt")]
    for table, message in (('severities = [0]', "[corruptions]: --severity must be in 1..5"),
                           ('colour = true', "[corruptions]: unknown key 'colour'"),
                           ('label = "fgsm"', "that no attack entry uses, got 'fgsm'")):
        suite.write_text(f'name = "s"\n[[attack]]\nname = "fgsm"\neps = [0.01]\n[corruptions]\n{table}\n')
        bad = invoke_cli("attack", "--run", run, "--suite", suite, "--workers", 0, "--out", tmp_path / "bad")
        assert bad.exit_code == 2 and message in bad.output.strip().splitlines()[-1], bad.output
        assert not (tmp_path / "bad").exists()
