# The two set-up commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers, a test file each at a time (module fixtures stay shared): most tests run one thread, so
# a 2-core machine finishes the suite in about half the time; more cores, more workers (make test TEST_WORKERS=8)
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

.PHONY: venv test test-fast lint demo clean

venv: $(STAMP)

# Reinstall when the dependency list changes; torch/torchvision are the builds pip finds on this machine.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(PYTEST)

# The unit tier, for development (a couple of minutes): everything but the end-to-end files (tests/conftest.py).
test-fast: lint
	$(PYTEST) -m "not e2e"

# Train SiT-Mini/4-VCA on the built-in digits (CPU, a few minutes), then score its samples with a classifier
# trained on real digits. Writes results/demo/: grid.png, samples.npz, model.safetensors, log.txt, log.jsonl.
demo: $(STAMP)
	@if [ -e results/demo ] && [ ! -f results/demo/args.json ]; then \
		echo "make demo: results/demo exists but holds no demo run (no args.json); move it away"; exit 1; fi
	rm -rf results/demo  # an earlier demo's run folder, which it wrote
	@start=$$(date +%s); \
	$(BIN)/python train_sit.py --config configs/demo.yaml && \
	$(BIN)/python -m gen.study.demo results/demo/samples.npz && \
	echo "make demo: $$(( $$(date +%s) - start )) s in all; results in results/demo/"

clean:
	rm -rf $(VENV) results .pytest_cache
