import math

import numpy as np
import pytest
import torch

from robustcars.metrics import (
    accuracy,
    attack_success_rate,
    entropy,
    macro_f1,
    mean_std,
    min_norm_summary,
    rank_shift_summary,
    ranks_of,
)


def test_entropy_hand_computed():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0],  # uniform over 4: ln 4
                           [0.0, 0.0, -1e4, -1e4],  # two equal classes: ln 2
                           [1e4, 0.0, 0.0, 0.0],  # certain: 0
                           [math.log(3.0), 0.0, -1e4, -1e4]])  # p = (3/4, 1/4)
    h = entropy(logits)
    p = np.array([0.75, 0.25])
    expected = [math.log(4), math.log(2), 0.0, float(-(p * np.log(p)).sum())]
    assert h.dtype == torch.float32 and h.shape == (4,)
    np.testing.assert_allclose(h.numpy(), expected, atol=1e-6)


def test_entropy_is_stable_for_huge_logits():
    h = entropy(torch.tensor([[1e30, -1e30, 0.0]]))
    assert torch.isfinite(h).all() and h.item() == pytest.approx(0.0, abs=1e-6)


def test_ranks_of_known_order_and_ties():
    logits = torch.tensor([[0.1, 0.9, 0.5, 0.3],
                           [2.0, 2.0, 1.0, 0.0]])
    classes = torch.tensor([[1, 2, 0], [0, 1, 3]])
    # row 0 order: 1 > 2 > 3 > 0 -> ranks of (1, 2, 0) = (1, 2, 4); row 1 ties share rank 1
    assert ranks_of(logits, classes).tolist() == [[1, 2, 4], [1, 1, 4]]


def test_accuracy_and_macro_f1_hand_computed():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # class 0: P=1/2 R=1/2 F1=1/2; class 1: P=2/3 R=1 F1=0.8; class 2: P=1 R=1/2 F1=2/3
    assert macro_f1(y, p) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_ignores_classes_absent_from_truth():
    y = np.array([0, 0, 1])
    p = np.array([0, 5, 1])  # class 5 is never true: not in the mean
    # class 0: P=1 R=1/2 F1=2/3; class 1: F1=1
    assert macro_f1(y, p) == pytest.approx((2 / 3 + 1) / 2)


def test_attack_success_rate_counts_only_clean_correct():
    y = np.array([0, 1, 2, 3])
    clean = np.array([0, 1, 2, 0])  # last one already wrong: not counted
    adv = np.array([1, 1, 0, 3])
    assert attack_success_rate(y, clean, adv) == pytest.approx(2 / 3)
    assert math.isnan(attack_success_rate(y, np.array([1, 0, 0, 0]), adv))


def test_rank_shift_summary():
    r = np.array([[1, 2, 3], [5, 1, 2], [2, 3, 1], [94, 7, 4]])
    s = rank_shift_summary(r)
    assert s["top1_rank_mean"] == pytest.approx((1 + 5 + 2 + 94) / 4)
    assert s["top1_rank_median"] == pytest.approx(3.5)
    assert s["top1_rank_max"] == 94
    assert s["top1_left_top3"] == pytest.approx(0.5)
    assert s["top3_set_kept"] == pytest.approx(0.5)  # rows 0 and 2 keep the same top-3 set
    assert s["top2_rank_mean"] == pytest.approx((2 + 1 + 3 + 7) / 4)


def test_mean_std_population():
    assert mean_std(np.array([1.0, 3.0])) == (2.0, 1.0)


def test_min_norm_summary_hand_computed():
    # 6 images: two misclassified (norm 0 whatever the attack said), one where the attack failed (inf)
    norms = np.array([0.3, 0.1, np.inf, 0.2, 5.0, 0.4])
    correct = np.array([True, True, True, True, False, False])
    s = min_norm_summary(norms, correct, eps_grid=np.array([0.0, 0.1, 0.15, 0.25, 1.0]))
    assert s["attacked"] == 4 and s["found_rate"] == 0.75
    # clean-correct norms sorted: 0.1, 0.2, 0.3, inf -> lower quantiles
    assert (s["q25"], s["median"], s["q75"]) == (0.1, 0.2, 0.3)
    assert s["mean_found"] == pytest.approx(0.2)
    # robust at eps iff norm > eps, over all 6 images (misclassified never robust, the failure always)
    assert [a for _, a in s["curve"]] == pytest.approx([4 / 6, 3 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_min_norm_summary_failures_and_empty_and_default_grid():
    s = min_norm_summary(np.array([np.inf, np.nan, 0.5]), np.array([True, True, True]))
    assert s["median"] == math.inf and s["found_rate"] == pytest.approx(1 / 3)
    curve = np.array(s["curve"])
    assert len(curve) == 40 and curve[0, 0] < 0.5 < curve[-1, 0]
    assert np.all(np.diff(curve[:, 1]) <= 0) and curve[0, 1] == 1.0 and curve[-1, 1] == pytest.approx(2 / 3)
    e = min_norm_summary(np.array([0.0]), np.array([False]))
    assert e["attacked"] == 0 and math.isnan(e["median"]) and e["curve"][0][1] == 0.0
    with pytest.raises(ValueError):
        min_norm_summary(np.zeros(3), np.ones(2, dtype=bool))
