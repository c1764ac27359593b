"""Cross-attack checks of a suite, on hand-made minimal norms."""

import math

from robustcars.evaluation.suite import min_norm_checks


def test_min_norm_checks_flag_an_under_optimized_attack():
    paths = [f"c/{i}.jpg" for i in range(12)]
    deepfool = {p: 0.1 + 0.01 * i for i, p in enumerate(paths)}
    cw_good = {p: 0.9 * v for p, v in deepfool.items()}
    cw_weak = {p: 3.0 * v for p, v in deepfool.items()}
    cw_weak["c/extra.jpg"] = 0.5  # not shared: ignored
    cw_weak["c/0.jpg"] = math.inf  # not found: ignored in the ratio
    linf = {p: 0.001 for p in paths}
    [ok] = min_norm_checks({"deepfool": ("deepfool", deepfool), "cw": ("cw_l2", cw_good),
                            "df_linf": ("deepfool_linf", linf)})
    assert ok["ok"] and ok["pair"] == ["deepfool", "cw"] and abs(ok["value"] - 1 / 0.9) < 1e-9
    [bad] = min_norm_checks({"deepfool": ("deepfool", deepfool), "cw": ("cw_l2", cw_weak)})
    assert not bad["ok"] and bad["pair"] == ["cw", "deepfool"] and bad["images"] == 11
    assert abs(bad["value"] - 3.0) < 1e-9 and "under-optimized" in bad["explain"]
    # EAD (elastic-net objective), other norms and too few shared images are not compared
    assert min_norm_checks({"deepfool": ("deepfool", deepfool), "ead": ("ead", cw_weak)}) == []
    assert min_norm_checks({"a": ("deepfool", deepfool), "b": ("cw_l2", {"c/1.jpg": 9.0})}) == []
