"""The figures as a reader checks them: axis labels, tick values, panels per norm (matplotlib objects, not pixels)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from robustcars.reporting.figures import (
    best_epoch,
    confusion_figure,
    entropy_figure,
    learning_curves_figure,
    robustness_figure,
)


def history(n: int, robust: bool = False) -> list[dict[str, float]]:
    f1 = [0.2, 0.5, 0.45, 0.6, 0.55][:n]
    rows = [{"epoch": i + 1, "train_loss": 3 - i * 0.3, "val_loss": 3.2 - i * 0.2, "train_f1": 0.1 + i * 0.1,
             "val_f1": f1[i]} for i in range(n)]
    if robust:
        for i, r in enumerate(rows):
            r.update(val_acc=0.5, val_robust_acc=[0.1, 0.3, 0.2, 0.25, 0.1][i])
    return rows


def lines_at_x(ax) -> list[float]:
    return [line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1 and
            line.get_linestyle() == ":"]


def test_learning_curves_label_the_loss_tick_whole_epochs_and_mark_the_best():
    fig = learning_curves_figure(history(5))
    loss, f1 = fig.axes
    assert loss.get_ylabel() == "cross-entropy loss" and f1.get_ylabel() == "macro-F1"
    assert {t.get_text() for t in loss.get_legend().get_texts()} >= {"train", "val", "best epoch (4)"}
    for ax in fig.axes:
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert lines_at_x(ax) == [4]
    plt.close(fig)


def test_one_epoch_still_draws_its_points_and_adversarial_runs_mark_the_robust_best():
    fig = learning_curves_figure(history(1))
    assert all(len(ax.get_lines()[0].get_xdata()) == 1 for ax in fig.axes)
    assert fig.axes[0].get_xlim() == (0.5, 1.5)
    plt.close(fig)
    assert best_epoch(history(5, robust=True)) == 2  # robust accuracy decides, not macro-F1 (epoch 4)
    fig = learning_curves_figure(history(5, robust=True))
    assert len(fig.axes) == 3 and lines_at_x(fig.axes[2]) == [2]
    plt.close(fig)


def test_entropy_histogram_marks_ln_k_and_counts_whole_images():
    k = 196
    rng = np.random.default_rng(0)
    fig = entropy_figure(rng.uniform(0, 5, 7), {"fgsm eps=0.01": rng.uniform(0, 5, 7)}, math.log(k))
    (ax,) = fig.axes
    assert any(abs(line.get_xdata()[0] - math.log(k)) < 1e-12 for line in ax.get_lines())
    assert any("ln K = 5.28" in t.get_text() for t in ax.get_legend().get_texts())
    fig.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_yticks())
    plt.close(fig)


def test_linf_and_l2_budgets_never_share_an_axis_and_clean_accuracy_is_drawn():
    curves = {"pgd": [(0.001, 0.5), (0.01, 0.1)], "fgsm": [(0.001, 0.6), (0.01, 0.2)],
              "pgd_l2": [(0.1, 0.5), (1.0, 0.0)]}
    fig = robustness_figure(curves, "t", {"pgd": "linf", "fgsm": "linf", "pgd_l2": "l2"},
                            {"pgd": 0.7, "fgsm": 0.7, "pgd_l2": 0.7})
    linf, l2 = fig.axes
    assert "L∞" in linf.get_xlabel() and "L2" in l2.get_xlabel()
    assert {t.get_text() for t in linf.get_legend().get_texts()} == {"pgd", "fgsm", "clean accuracy 0.700"}
    assert {t.get_text() for t in l2.get_legend().get_texts()} == {"pgd_l2", "clean accuracy 0.700"}
    assert [list(line.get_ydata()) for line in linf.get_lines() if line.get_linestyle() == ":"] == [[0.7, 0.7]]
    plt.close(fig)



def test_a_perturbation_is_captioned_in_its_attacks_norm_and_zero_says_so():
    from robustcars.reporting.figures import perturbation_caption

    delta = np.zeros((3, 4, 4))
    assert perturbation_caption(delta, "linf") == "no perturbation"
    delta[0, 0, 0], delta[1, 1, 1] = 0.003, -0.004
    assert perturbation_caption(delta, "linf") == "perturbation (×125)\nL∞ = 0.0040"
    assert perturbation_caption(delta, "l2") == "perturbation (×125)\nL2 = 0.0050"


LONG = "Chevrolet Silverado 2500HD Regular Cab 2012"


def _panel_example(k: int = 4) -> dict:
    rng = np.random.default_rng(0)
    img = rng.random((3, 8, 8))
    return {"image": img, "adv": np.clip(img + 0.01, 0, 1), "label": 0, "clean_top": [(0, 0.7), (1, 0.2), (2, 0.1)],
            "adv_top": [(1, 0.6), (0, 0.3), (3, 0.1)], "ranks": [2, 1, 5]}


def test_attack_panels_keep_whole_class_names_and_explain_the_rank_change():
    from robustcars.reporting.figures import attack_panel_figure

    names = [LONG, "AM General Hummer SUV 2000", "Audi R8 Coupe 2012", "BMW M3 Coupe 2012"]
    fig = attack_panel_figure([_panel_example(), _panel_example()], names, "FGSM")
    titles = [ax.get_title() for ax in fig.axes]
    assert "original, true:\nChevrolet Silverado 2500HD\nRegular Cab 2012" in titles  # wrapped, not cut
    assert titles.count("rank change of the clean top-3\n(+n: n places lower under attack)") == 2
    table = fig.axes[5].tables[0]
    cells = {(r, c): t.get_text().get_text() for (r, c), t in table.get_celld().items()}
    assert cells[0, 3] == "change" and [cells[i, 3] for i in (1, 2, 3)] == ["+1", "-1", "+2"]
    assert cells[1, 0] == "Chevrolet Silverado 2500HD\nRegular Cab 2012"
    bars = [t.get_text() for t in fig.axes[3].texts]
    assert f"{LONG}  0.70" in bars  # the bar label holds the whole name
    assert fig.get_layout_engine() is not None  # constrained: rows do not run into each other
    plt.close(fig)


def test_grad_cam_panels_have_a_colour_bar_name_the_class_and_say_when_a_map_is_flat():
    from robustcars.reporting.figures import FLAT_NOTE, cam_panel_figure

    rng = np.random.default_rng(0)
    img, heat = rng.random((3, 8, 8)), rng.random((8, 8))
    row = {"image": img, "cam": img.transpose(1, 2, 0), "cam_map": heat, "label": LONG,
           "top": [(LONG, 0.7), ("Audi R8 Coupe 2012", 0.3)], "adv": img, "adv_cam": img.transpose(1, 2, 0),
           "adv_cam_map": np.zeros((8, 8)), "adv_top": [("Audi R8 Coupe 2012", 0.6), (LONG, 0.4)],
           "shift": {"pearson": float("nan"), "top_kept": 0.0}}
    fig = cam_panel_figure([row], "FGSM eps 0.01")
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("Grad-CAM weight")]
    assert len(bars) == 1 and bars[0].get_ylim() == (0.0, 1.0)
    clean_title, adv_title = fig.axes[1].get_title(), fig.axes[3].get_title()
    assert clean_title == "Grad-CAM of the clean top-1\nChevrolet Silverado 2500HD\nRegular Cab 2012"  # whole
    assert adv_title.startswith("Grad-CAM of the adversarial top-1\nAudi R8 Coupe 2012") and FLAT_NOTE in adv_title
    assert "nan" not in adv_title  # a flat map has no correlation to show
    # the four images are drawn pixel for pixel, as they were scored (no smoothing between pixels)
    assert [ax.images[0].get_interpolation() for ax in fig.axes[:4]] == ["nearest"] * 4
    plt.close(fig)


def test_the_adversarial_confusion_matrix_stands_beside_the_clean_one_with_make_blocks():
    clean = np.diag([2, 5, 1, 4])
    adversarial = np.array([[0, 2, 0, 0], [5, 0, 0, 0], [0, 0, 0, 1], [0, 0, 4, 0]])  # all flips within a make
    fig = confusion_figure([("clean", clean), ("adversarial", adversarial)], clip=3, makes=["A", "A", "B", "B"])
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "predicted class index"]
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["clean", "adversarial"]
    np.testing.assert_array_equal(panels[0].images[0].get_array(), np.minimum(clean, 3))
    np.testing.assert_array_equal(panels[1].images[0].get_array(), np.minimum(adversarial, 3))
    # one boundary between make A (classes 0, 1) and make B (2, 3), drawn on both axes of each panel
    for ax in panels:
        assert sorted({line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}) == [1.5]
        assert sorted({line.get_ydata()[0] for line in ax.get_lines() if len(set(line.get_ydata())) == 1}) == [1.5]
    plt.close(fig)


def test_a_crowded_legend_stands_beside_the_curves_not_over_them():
    curves = {f"model {i} · pgd": [(0.001, 0.5 - i * 0.05), (0.002, 0.3 - i * 0.05)] for i in range(5)}
    fig = robustness_figure(curves, "t", {k: "linf" for k in curves}, {k: 0.6 for k in curves})
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1
    plt.close(fig)
    few = robustness_figure(dict(list(curves.items())[:2]), "t", {k: "linf" for k in curves})
    few.canvas.draw()
    (ax,) = few.axes
    assert ax.get_legend().get_window_extent().x0 < ax.get_window_extent().x1  # inside: there is room
    plt.close(few)
