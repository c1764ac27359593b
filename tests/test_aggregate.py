import math

import pytest

from robustcars.reporting.aggregate import confusion, flips, group_robustness, make_of, top1_rank_distribution

NAMES = ["Aston Martin V8 Vantage Coupe 2012", "Aston Martin Virage Coupe 2012", "BMW M3 Coupe 2012",
         "Land Rover LR2 SUV 2012", "Mercedes-Benz C-Class Sedan 2012"]


def rec(label, clean, adv, rank=1):
    return {"label": label, "clean_pred": clean, "adv": [{"pred": adv, "clean_top3_rank": [rank, 2, 3]}]}


RECORDS = [
    rec(0, 0, 1, 2),  # Aston -> Aston (same make flip)
    rec(0, 0, 0),
    rec(1, 1, 0, 3),  # Aston -> Aston
    rec(2, 2, 3, 40),  # BMW -> Land Rover
    rec(2, 2, 2),
    rec(3, 4, 4, 1),  # clean wrong: not a flip
    rec(4, 4, 4),
]


def test_make_of():
    assert [make_of(n) for n in NAMES] == ["Aston Martin", "Aston Martin", "BMW", "Land Rover", "Mercedes-Benz"]
    assert make_of("AM General Hummer SUV 2000") == "AM General"


def test_group_robustness_per_class_and_make():
    per_class = group_robustness(RECORDS, NAMES, 0)
    by = {r["group"]: r for r in per_class}
    assert by[NAMES[0]] == {"group": NAMES[0], "images": 2, "clean_acc": 1.0, "robust_acc": 0.5, "drop": 0.5}
    assert by[NAMES[1]]["robust_acc"] == 0.0 and by[NAMES[3]]["clean_acc"] == 0.0
    assert per_class[0]["group"] == NAMES[1]  # the largest drop (1.0) comes first
    assert [r["drop"] for r in per_class] == sorted([r["drop"] for r in per_class], reverse=True)
    makes = {r["group"]: r for r in group_robustness(RECORDS, [make_of(n) for n in NAMES], 0)}
    assert makes["Aston Martin"]["images"] == 3 and makes["Aston Martin"]["robust_acc"] == pytest.approx(1 / 3)
    assert makes["BMW"]["drop"] == 0.5


def test_flips_and_same_make_share():
    f = flips(RECORDS, NAMES, 0)
    assert f["fooled"] == 3
    assert f["same_make_share"] == pytest.approx(2 / 3)
    assert {(t["true"], t["adversarial"], t["same_make"]) for t in f["top"]} == {
        (NAMES[0], NAMES[1], True), (NAMES[1], NAMES[0], True), (NAMES[2], NAMES[3], False)}
    assert math.isnan(flips(RECORDS[4:5], NAMES, 0)["same_make_share"])


def test_confusion_and_rank_distribution():
    cm = confusion(RECORDS, 5)
    assert cm.shape == (5, 5) and cm.trace() == 6 and cm[3, 4] == 1
    assert confusion(RECORDS, 5, 0).trace() == 3
    assert top1_rank_distribution(RECORDS, 0) == [2, 1, 3, 40, 1, 1, 1]


def test_extreme_images():
    from robustcars.reporting.aggregate import extreme_images

    def r(i, label, clean, rank, ent, p_clean, adv_top, p_adv):
        return {"index": i, "label": label, "clean_pred": clean, "clean_top3": [clean, 9, 8], "clean_entropy": 1.0,
                "clean_top3_prob": [p_clean, 0.1, 0.1],
                "adv": [{"clean_top3_rank": [rank, 2, 3], "entropy": ent, "top3": [adv_top, 9, 8],
                         "top3_prob": [p_adv, .1, .1]}]}

    recs = [r(0, 1, 1, 40, 2.0, 0.9, 5, 0.5),  # fell to rank 40
            r(1, 1, 1, 40, 3.0, 0.9, 5, 0.5),  # same fall, larger entropy rise: first
            r(2, 2, 2, 1, 1.0, 0.9, 2, 0.89),  # still first, lost 0.01
            r(3, 2, 2, 1, 1.0, 0.9, 2, 0.5),  # still first, lost 0.4
            r(4, 3, 0, 90, 1.0, 0.9, 5, 0.5)]  # clean wrong: never chosen
    most, least = extreme_images(recs, 0, k=2)
    assert most == [1, 0] and least == [2, 3]
