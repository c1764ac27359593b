"""The worst-case cascade: attacks chained cheapest first on the images still standing, eps reused upward."""

from __future__ import annotations

import json

import pytest
import torch

from robustcars.attacks import get_attack
from robustcars.errors import ConfigError
from robustcars.evaluation.suite import load_suite

from .conftest import invoke_cli, train_tiny_run
from .test_attacks import labelled_batch

EPS = [0.0, 0.02, 0.05, 0.1]
PARTS = [{"name": "fgsm"}, {"name": "bim", "label": "bim5", "steps": 5}]


@pytest.fixture
def problem():
    return labelled_batch(32, 4)  # 4 images the model already gets wrong: never attacked


def wrong(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) != y


def test_worst_case_breakdown_and_pass_counts(problem):
    model, x, y = problem
    out = get_attack("cascade", attacks=PARTS)(model, x, y, EPS)
    fgsm = get_attack("fgsm")(model, x, y, EPS).adv
    bim = get_attack("bim", steps=5)(model, x, y, EPS).adv
    correct = ~wrong(model, x, y)
    standing_before_bim = 0
    standing_before_fgsm = 0
    for j, e in enumerate(EPS):
        fooled = wrong(model, out.adv[j], y) & correct
        # the worst case: fooled where any attack fooled at this eps or a smaller one (examples kept upward)
        any_part = torch.zeros_like(fooled)
        for k in range(j + 1):
            any_part |= wrong(model, fgsm[k], y) | wrong(model, bim[k], y)
        assert torch.equal(fooled, any_part & correct), e
        d = (out.adv[j] - x).flatten(1).abs().amax(1)
        assert (d <= e + 1e-6).all()
        by = out.fooled_by[j]
        assert [i for i in range(32) if by[i] is not None] == fooled.nonzero().flatten().tolist()
        assert all(b in (None, "fgsm", "bim5") for b in by)
        if j:  # images FGSM fooled first at this eps: exactly FGSM's own success on the images still standing
            newly = [i for i in range(32) if by[i] == "fgsm" and out.fooled_by[j - 1][i] is None]
            prev = wrong(model, out.adv[j - 1], y) & correct
            assert newly == (wrong(model, fgsm[j], y) & correct & ~prev).nonzero().flatten().tolist()
            standing_before_fgsm += int((correct & ~prev).sum())
            standing_before_bim += int((correct & ~prev & ~wrong(model, fgsm[j], y)).sum())
    assert not torch.equal(out.adv[-1], x)
    assert torch.equal(out.adv[-1][:4], x[:4])  # misclassified clean: never sent
    # known pass counts: FGSM one per image standing, BIM 5 per image FGSM left standing (eps 0 costs nothing)
    assert out.passes_by == {"fgsm": standing_before_fgsm, "bim5": 5 * standing_before_bim}
    # forward-only queries: the check after each attack of which images it fooled, one per image sent
    assert out.queries_by == {"fgsm": standing_before_fgsm, "bim5": standing_before_bim}
    assert out.passes == pytest.approx((standing_before_fgsm + 5 * standing_before_bim) / 32)
    assert 0 < standing_before_bim < standing_before_fgsm


def test_reusing_eps_saves_passes_and_never_hides_a_fooled_image(problem):
    model, x, y = problem
    reuse = get_attack("cascade", attacks=PARTS)(model, x, y, EPS)
    fresh = get_attack("cascade", attacks=PARTS, reuse_eps=False)(model, x, y, EPS)
    assert reuse.passes < fresh.passes
    for a, b in zip(reuse.adv, fresh.adv):  # every image fooled from scratch at eps is fooled by the reuse too
        assert not (wrong(model, b, y) & ~wrong(model, a, y)).any()


def test_model_state_untouched(problem):
    model, x, y = problem
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    get_attack("cascade", attacks=PARTS)(model, x, y, [0.05])
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


@pytest.mark.parametrize("attacks, message", [
    (None, "cascade: attacks must be given"),
    ([], "attacks must be a non-empty list"),
    ([{"name": "pgd_l2"}], "pgd_l2 is an L2 attack; this cascade is L∞"),
    ([{"name": "cascade"}], "'cascade' is not an attack a cascade can run"),
    ([{"name": "pgd", "steps": 0}], r"#1: pgd: steps must be an integer in \[1, 10000\]"),
    ([{"name": "pgd"}, {"name": "pgd"}], "gives one label twice"),
])
def test_bad_cascades_are_refused(attacks, message):
    params = {} if attacks is None else {"attacks": attacks}
    with pytest.raises(ConfigError, match=message):
        get_attack("cascade", **params)


def _suite(tmp_path, body: str):
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


ENTRIES = ('[[attack]]\nname = "fgsm"\neps = [0.02, 0.1]\n'
           '[[attack]]\nname = "pgd"\nlabel = "pgd5"\neps = [0.02, 0.1]\nsteps = 5\n')


def test_cascade_suites_are_validated_whole(tmp_path):
    s = load_suite(_suite(tmp_path, 'name = "wc"\ncascade = true\n' + ENTRIES))
    assert [e.label for e in s.entries] == ["cascade"] and s.cascade_of == ["fgsm", "pgd5"]
    assert s.entries[0].params["attacks"][1] == {"name": "pgd", "label": "pgd5", "steps": 5}
    for body, message in [
        ('cascade = true\n' + ENTRIES.replace("[0.02, 0.1]\nsteps", "[0.02]\nsteps"), "the same eps list"),
        ('cascade = true\n' + ENTRIES.replace('"pgd"', '"pgd_l2"'), "mix l2 and linf"),
        ('cascade = "yes"\n' + ENTRIES, "cascade and reuse_eps must be true or false"),
        ('reuse_eps = false\n' + ENTRIES, "reuse_eps goes with cascade = true"),
        ('cascade = true\n' + ENTRIES + 'max_images = 3\n', "set max_images at the top level only"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_suite(_suite(tmp_path, body))


def test_cli_cascade_suite_writes_the_breakdown_and_costs(tmp_path):
    data, run = train_tiny_run(tmp_path)
    suite = _suite(tmp_path, 'name = "wc"\ncascade = true\n' + ENTRIES)
    out = tmp_path / "o"
    r = invoke_cli("attack", "--run", run, "--suite", suite, "--batch-size", 4, "--workers", 0, "--out", out)
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "cascade" / "attack.json").read_text())
    records = [json.loads(line) for line in (out / "cascade" / "records.jsonl").read_text().splitlines()]
    for j, row in enumerate(meta["rows"][1:]):
        breakdown = meta["fooled_by"][j]
        correct = [rec for rec in records if rec["clean_pred"] == rec["label"]]
        assert breakdown["robust"] == sum(rec["adv"][j]["pred"] == rec["label"] for rec in correct)
        assert breakdown["robust"] + sum(breakdown["fooled_first_by"].values()) == len(correct)
        assert row["accuracy"] == pytest.approx(breakdown["robust"] / len(records))
    by = meta["cost"]["passes_per_image_by_attack"]
    assert set(by) == {"fgsm", "pgd5"} and sum(by.values()) == pytest.approx(
        meta["cost"]["forward_backward_passes_per_image"], abs=1e-2)
    summary = json.loads((out / "suite.json").read_text())
    assert list(summary["results"]) == ["cascade"] and summary["fooled_by"]["cascade"] == meta["fooled_by"]
    assert "cascade @ eps 0.02: fooled first by" in r.output and "forward+backward passes per image" in r.output
    r = invoke_cli("report", out, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    assert "fooled first by" in (tmp_path / "rep" / "report.md").read_text()


def test_square_queries_are_counted_as_forward_only(problem):
    pytest.importorskip("pyautoattack")
    model, x, y = problem
    out = get_attack("square", n_queries=30)(model, x, y, [0.02])
    standing = int((~wrong(model, x, y)).sum())
    # Square runs its queries without gradients: they are queries, not forward+backward passes
    # pyautoattack's two predictions around the search run with grad mode on: counted as passes, nothing else
    assert out.passes_by["square"] <= 2 * standing
    assert out.queries_by["square"] >= 2 * standing
