"""The second fault matrix, CLI part: options, models, photos, seeds and reports that used to be accepted, end in
a traceback or exit with the wrong status. Each case asserts the refusal contract of :func:`check_refusal`
(exit 2, one ``error:`` line with the exact message, no traceback, no byte of earlier results changed, nothing
created)."""

from __future__ import annotations

import pytest

from .common import Case, check_refusal

A = ["attack", "--run", "{run}", "--workers", "0", "--batch-size", "4", "--out", "{root}/n1"]
M = ["attack", "--data", "{data}", "--workers", "0", "--batch-size", "4", "--img-size", "32", "--out", "{root}/n1",
     "--model"]
T = ["train", "--data", "{data}", "--out", "{root}/n2", "--weights", "none", "--arch", "resnet18", "--workers", "0"]
P = ["predict", "--run", "{run}"]
N1, N2 = ["n1"], ["n2"]
SEED_RANGE = "must be an integer in [0, 4294967295]"
FINITE = "--mean and --std take three finite numbers each (std > 0)"
FACTORY = "tests.faults.factories:"
LOGITS = "a float tensor of logits of shape (N, 3), one column per class"

CASES = [
    # seeds in [0, 2**32)
    Case("attack seed -1", A + ["--seed", "-1"], f"--seed {SEED_RANGE}, got -1", new=N1),
    Case("attack seed 2**70", A + ["--seed", str(2**70)], f"--seed {SEED_RANGE}, got {2**70}", new=N1),
    Case("train seed -1", T + ["--seed", "-1"], f"--seed {SEED_RANGE}, got -1", new=N2),
    Case("train seed 2**70", T + ["--seed", str(2**70)], f"--seed {SEED_RANGE}, got {2**70}", new=N2),
    Case("pgd seed parameter -1", A + ["--attack", "pgd", "--param", "seed=-1"],
         "pgd: seed must be an integer in [0, 4294967295], got -1", new=N1),
    Case("suite entry seed -1", A[:-2] + ["--suite", "{root}/seed_negative.toml", "--out", "{root}/s1"],
         "attack #1: pgd: seed must be an integer in [0, 4294967295], got -1", new=["s1"]),
    # input normalization of --model
    Case("std nan", M + ["torchvision:resnet18", "--mean", "0.5,0.5,0.5", "--std", "nan,nan,nan"], FINITE, new=N1),
    Case("std zero", M + ["torchvision:resnet18", "--mean", "0.5,0.5,0.5", "--std", "0,0,0"], FINITE, new=N1),
    Case("std negative", M + ["torchvision:resnet18", "--mean", "0.5,0.5,0.5", "--std", "-1,1,1"], FINITE, new=N1),
    Case("mean inf", M + ["torchvision:resnet18", "--mean", "inf,0,0", "--std", "1,1,1"], FINITE, new=N1),
    Case("std without mean", M + ["torchvision:resnet18", "--std", "1,1,1"], "give both --mean and --std", new=N1),
    # --model targets and what the model returns, checked on the first image
    Case("factory os:system", M + ["os:system"], "the target must be a Python function or class returning a "
         "torch.nn.Module, got a builtin_function_or_method", new=N1),
    Case("factory sys:exit", M + ["sys:exit"], "the target must be a Python function or class", new=N1),
    Case("factory not callable", M + [FACTORY + "NOT_CALLABLE"], "the target must be a Python function or class "
         "returning a torch.nn.Module, got a int", new=N1),
    Case("factory raises", M + [FACTORY + "raises"], f"--model {FACTORY}raises raised RuntimeError: no weights here",
         new=N1),
    Case("factory calls sys.exit", M + [FACTORY + "exits"], f"--model {FACTORY}exits raised SystemExit: 0", new=N1),
    Case("factory returns an int", M + [FACTORY + "not_a_module"], "returned a int, not a torch.nn.Module", new=N1),
    Case("module fails to import", M + ["tests.faults.broken_module:net"],
         "importing 'tests.faults.broken_module' failed: ValueError: this module cannot be imported", new=N1),
    Case("missing factory", M + [FACTORY + "nope"], "cannot import 'nope' from 'tests.faults.factories'", new=N1),
    Case("no colon in spec", M + ["resnet18"], "--model must be torchvision:NAME, timm:NAME or package.module:factory",
         new=N1),
    Case("unknown torchvision model", M + ["torchvision:resnet9000"], "torchvision has no model 'resnet9000'", new=N1),
    Case("unknown timm model", M + ["timm:resnet9000"], "timm has no model 'resnet9000'", new=N1),
    Case("10 logits for 3 classes", M + [FACTORY + "ten_logits", "--examples", "0"],
         f"returns a tensor of shape (1, 10); expected {LOGITS}", new=N1),
    Case("logits in a tuple", M + [FACTORY + "logits_tuple"], f"returns a tuple, not {LOGITS}", new=N1),
    Case("1-D logits", M + [FACTORY + "logits_flat"], f"returns a tensor of shape (3,); expected {LOGITS}", new=N1),
    Case("NaN logits", M + [FACTORY + "logits_nan"], "returns non-finite logits (NaN or inf) for a valid image",
         new=N1),
    Case("integer logits", M + [FACTORY + "logits_int"], f"returns int64 values; expected {LOGITS}", new=N1),
    Case("model for one channel", M + [FACTORY + "one_channel"], "fails on an input of shape (1, 3, 32, 32)",
         new=N1),
    # a run carries its own preprocessing
    Case("--img-size with --run", A + ["--img-size", "64"], "--img-size and --resize go with --model", new=N1),
    Case("--resize with --run", A + ["--resize", "crop"], "--img-size and --resize go with --model", new=N1),
    Case("--mean with --run", A + ["--mean", "0,0,0", "--std", "1,1,1"], "go with --model", new=N1),
    Case("--classes with --run", A + ["--classes", "{root}/a_file"], "go with --model", new=N1),
    # every integer attack parameter is bounded
    Case("pgd steps 1e9", A + ["--attack", "pgd", "--param", "steps=1e9"],
         "pgd: steps must be an integer in [1, 10000], got 1000000000", new=N1),
    Case("pgd steps 10001", A + ["--attack", "pgd", "--steps", "10001"],
         "pgd: steps must be an integer in [1, 10000], got 10001", new=N1),
    Case("pgd restarts 1000", A + ["--attack", "pgd", "--restarts", "1000"],
         "pgd: restarts must be an integer in [1, 100], got 1000", new=N1),
    Case("bim steps 0", A + ["--attack", "bim", "--steps", "0"], "bim: steps must be an integer in [1, 10000], got 0",
         new=N1),
    Case("deepfool candidates 5000", A + ["--attack", "deepfool", "--param", "candidates=5000"],
         "deepfool: candidates must be an integer in [2, 1000], got 5000", new=N1),
    Case("cw binary search 1000", A + ["--attack", "cw_l2", "--param", "binary_search_steps=1000"],
         "cw_l2: binary_search_steps must be an integer in [1, 100], got 1000", new=N1),
    Case("hsj gradient queries 10**6", A + ["--attack", "hsj", "--param", "max_gradient_eval_steps=1000000"],
         "hsj: max_gradient_eval_steps must be an integer in [1, 100000], got 1000000", new=N1),
    Case("apgd n_iter 20000", A + ["--attack", "apgd_ce", "--param", "n_iter=20000"],
         "apgd_ce: n_iter must be an integer in [1, 10000], got 20000", new=N1),
    Case("square queries 10**6", A + ["--attack", "square", "--param", "n_queries=1000000"],
         "square: n_queries must be an integer in [1, 100000], got 1000000", new=N1),
    Case("apgd_ce restarts 101", A + ["--attack", "apgd_ce", "--param", "n_restarts=101"],
         "apgd_ce: n_restarts must be an integer in [1, 100], got 101", new=N1),
    Case("suite steps 1e9", A[:-2] + ["--suite", "{root}/steps_huge.toml", "--out", "{root}/s1"],
         "attack #1: pgd: steps must be an integer in [1, 10000], got 1000000000.0", new=["s1"]),
    # attacks that need more classes than the model has
    Case("apgd_t on 3 classes", A + ["--attack", "apgd_t", "--eps", "0.0001"],
         "apgd_t needs a model of at least 4 classes, this one has 3", new=N1),
    Case("autoattack on 3 classes", A + ["--attack", "autoattack"],
         "autoattack needs a model of at least 4 classes, this one has 3", new=N1),
    Case("fab_t 5 targets of 3 classes", A + ["--attack", "fab_t", "--param", "n_target_classes=5"],
         "fab_t: n_target_classes must be at most 2 (classes - 1), got 5", new=N1),
    Case("suite apgd_t on 3 classes", A[:-2] + ["--suite", "{root}/apgd_t_3.toml", "--out", "{root}/s1"],
         "suite entry 'apgd_t': apgd_t needs a model of at least 4 classes", new=["s1"]),
    # other attack options
    Case("target -3", A + ["--attack", "pgd", "--target", "-3"],
         "pgd: target must be one of least_likely, runner_up or a class index >= 0, got '-3'", new=N1),
    Case("target word", A + ["--attack", "pgd", "--target", "furthest"],
         "pgd: target must be one of least_likely, runner_up or a class index >= 0", new=N1),
    Case("fgsm targeted", A + ["--target", "1"], "fgsm: unknown parameter 'target'", new=N1),
    Case("early_stop maybe", A + ["--attack", "pgd", "--param", "early_stop=maybe"],
         "pgd: early_stop must be true or false, got 'maybe'", new=N1),
    Case("alpha 2", A + ["--attack", "pgd", "--alpha", "2"], "pgd: alpha must be a finite number > 0 and <= 1, got 2.0",
         new=N1),
    Case("eps negative", A + ["--eps", "-0.1"], "eps must be a number in [0, 1] (pixel scale), got -0.1", new=N1),
    Case("eps nan", A + ["--eps", "nan"], "eps must be a number in [0, 1] (pixel scale), got nan", new=N1),
    Case("suite with --eps", A[:-2] + ["--suite", "{root}/steps_huge.toml", "--eps", "0.1"],
         "--suite defines attacks, eps and parameters"),
    Case("neither --run nor --model", ["attack", "--eps", "0.1"], "give --run (a robustcars run) or --model"),
    Case("batch size 0", A + ["--batch-size", "0"], "Invalid value for '--batch-size'", new=N1),
    Case("split unknown", A + ["--split", "dev"], "Invalid value for '--split'", new=N1),
    Case("examples -1", A + ["--examples", "-1"], "Invalid value for '--examples'", new=N1),
    Case("cam -1", A + ["--cam", "-1"], "Invalid value for '--cam'", new=N1),
    Case("max images 0", A + ["--max-images", "0"], "Invalid value for '--max-images'", new=N1),
    Case("run folder without best.pt", A[:2] + ["{root}/photos"] + A[3:], "checkpoint not found: ", new=N1),
    # suites
    Case("suite not TOML", A[:-2] + ["--suite", "{root}/not_toml.toml", "--out", "{root}/s1"], "invalid TOML",
         new=["s1"]),
    Case("suite without entries", A[:-2] + ["--suite", "{root}/no_entries.toml", "--out", "{root}/s1"],
         "no [[attack]] entries", new=["s1"]),
    Case("suite duplicate labels", A[:-2] + ["--suite", "{root}/dup_labels.toml", "--out", "{root}/s1"],
         "label 'fgsm' used twice", new=["s1"]),
    Case("cascade of two norms", A[:-2] + ["--suite", "{root}/mixed_norms.toml", "--out", "{root}/s1"],
         "a cascade chains attacks of one norm", new=["s1"]),
    Case("cascade of two eps lists", A[:-2] + ["--suite", "{root}/mixed_eps.toml", "--out", "{root}/s1"],
         "every entry of a cascade needs the same eps list", new=["s1"]),
    Case("suite max_images 0", A[:-2] + ["--suite", "{root}/zero_images.toml", "--out", "{root}/s1"],
         "max_images must be an integer >= 1, got 0", new=["s1"]),
    # training options, all refused before the run folder exists
    Case("freeze 100", T + ["--freeze", "100"], "--freeze must be in [0, 9] for resnet18, got 100", new=N2),
    Case("freeze 7 of Lite0", T[:-4] + ["--arch", "efficientnet_lite0", "--freeze", "7", "--workers", "0"],
         "--freeze must be in [0, 6] for efficientnet_lite0, got 7", new=N2),
    Case("epochs 0", T + ["--epochs", "0"], "Invalid value for '--epochs'", new=N2),
    Case("img size 8", T + ["--img-size", "8"], "Invalid value for '--img-size'", new=N2),
    Case("weight decay -1", T + ["--weight-decay", "-1"], "--weight-decay must be >= 0, got -1.0", new=N2),
    Case("label smoothing 1", T + ["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0", new=N2),
    Case("train eps 0", T + ["--adversarial", "pgd", "--train-eps", "0"],
         "--train-eps must be in (0, 1] (L∞, pixel scale), got 0.0", new=N2),
    Case("defensive without a teacher", T + ["--defensive"], "--defensive goes with --distill-from", new=N2),
    Case("adversarial and distillation", T + ["--adversarial", "fgsm-rs", "--distill-from", "{run}"],
         "--adversarial and --distill-from cannot be combined", new=N2),
    Case("alpha 2 of distillation", T + ["--distill-from", "{run}", "--alpha", "2"],
         "--alpha must be in [0, 1], got 2.0", new=N2),
    Case("temperature 0", T + ["--distill-from", "{run}", "--temperature", "0"], "--temperature must be > 0, got 0.0",
         new=N2),
    Case("teacher missing", T + ["--distill-from", "{root}/nope"], "--distill-from", new=N2),
    Case("teacher of other classes", T + ["--distill-from", "{run4}"], "was trained on other classes", new=N2),
    Case("weights a word", T[:-4] + ["--weights", "best", "--workers", "0"],
         "--weights must be imagenet, none or an existing file, got 'best'", new=N2),
    Case("data is a file", T[:1] + ["--data", "{root}/a_file"] + T[3:], "data folder not found", new=N2),
    Case("limit per class 0", T + ["--limit-per-class", "0"], "Invalid value for '--limit-per-class'", new=N2),
    Case("unknown arch", T + ["--arch", "vgg16"], "Invalid value for '--arch'", new=N2),
    # photos
    Case("predict a FIFO", P + ["{root}/fifo.jpg"], "no photo left to predict (1 skipped)"),
    Case("predict 1 x 100,000 pixels", P + ["{root}/wide.png"], "no photo left to predict (1 skipped)"),
    Case("predict top-k 500 of 3", P + ["{root}/wide.png", "--top-k", "500"], "--top-k must be in [1, 3], got 500"),
    Case("predict an empty folder", P + ["{root}/photos"], "no files in"),
    Case("predict a missing photo", P + ["{root}/none.jpg"], "none.jpg not found"),
    Case("predict apgd_t on 3 classes", P + ["{root}/wide.png", "--attack", "apgd_t"],
         "apgd_t needs a model of at least 4 classes, this one has 3"),
    Case("predict steps 1e9", P + ["{root}/wide.png", "--attack", "pgd", "--param", "steps=1e9"],
         "pgd: steps must be an integer in [1, 10000], got 1000000000"),
    Case("predict --param without --attack", P + ["{root}/wide.png", "--param", "steps=3"], "--param is for --attack"),
    Case("predict --cam without --out", P + ["{root}/wide.png", "--cam"], "--cam writes one figure per photo"),
    Case("predict threshold 5", P + ["{root}/wide.png", "--threshold", "5"], "--threshold must be in [0, 1], got 5.0"),
    Case("predict eps 2", P + ["{root}/wide.png", "--attack", "fgsm", "--eps", "2"], "eps must be a number in [0, 1]"),
    Case("prefilter threshold -1", ["prefilter", "{data}", "--out", "{root}/p.csv", "--threshold", "-1"],
         "--threshold must be in [0, 1], got -1.0"),
    Case("prefilter out is a folder", ["prefilter", "{data}", "--out", "{root}/photos"], "is a folder; give a .csv"),
    # reports: one class set, attack folders where they belong
    Case("report of two class sets", ["report", "{run}", "{run4}", "--out", "{root}/r1"],
         "were evaluated on different class sets (another dataset or class order); report them separately",
         new=["r1"]),
    Case("report of an attack of another model inside a run", ["report", "{root}/run_copy", "--out", "{root}/r1"],
         "attack-foreign lies in run", new=["r1"]),
    # the web app's own checks, before it serves
    Case("serve public host without a token", ["serve", "--host", "0.0.0.0", "--runs", "{root}/n3"],
         "is reachable from other machines", new=["n3"]),
    Case("serve attack seconds 0", ["serve", "--attack-seconds", "0", "--runs", "{root}/n3"],
         "Invalid value for '--attack-seconds'", new=["n3"]),
    Case("bench img size 8", ["bench", "--img-size", "8"], "Invalid value for '--img-size'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_refusal(world, case: Case):
    check_refusal(world, case)
