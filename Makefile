# Two set-up commands: `make demo` (train then attack on real data) and `make test`.
# Each creates its own virtual environment in .venv. On these machines torch comes from local wheels
# (see .ci/constraints.txt); elsewhere pip resolves torch as usual.
PYTHON ?= python3
VENV ?= .venv
DATA ?= ../shared/data/stanford-cars-160
DEMO ?= runs/demo
BIN := $(VENV)/bin

.PHONY: venv test demo clean

$(BIN)/robustcars: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c .ci/constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -c .ci/constraints.txt -e '.[lite0,web,autoattack,corruptions,dev]'
	touch $@

venv: $(BIN)/robustcars

test: venv
	$(BIN)/ruff check .
	$(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

# 12 min on 2 CPU cores (measured, venv already built): EfficientNet-Lite0 (ImageNet weights) fine-tuned
# 2 epochs at 128 px on the 4,893 training images, then FGSM at three budgets on all 2,030 test images.
# Full settings are options (see README "Measured results").
demo: venv
	@test -d "$(DATA)" || { echo "error: no dataset at $(DATA): get Stanford Cars (class folders ROOT/{train,val,test}/<class>/ or the devkit layout cars_train/, cars_test/, devkit/; see README 'Data') and run make demo DATA=ROOT" >&2; exit 2; }
	rm -rf $(DEMO)
	$(BIN)/robustcars train --data $(DATA) --arch efficientnet_lite0 --weights imagenet --img-size 128 \
		--resize squash --epochs 2 --lr 1e-3 --label-smoothing 0.1 --out $(DEMO)
	$(BIN)/robustcars attack --run $(DEMO) --eps 0.001 --eps 0.003 --eps 0.01

clean:
	rm -rf $(VENV) runs
