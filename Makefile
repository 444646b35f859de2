# earthcast: `make demo` and `make test` each set themselves up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo prediff-demo test test-slow lint bench clean

install: $(STAMP)

# torch first and pinned exactly: the CPU wheel on this machine; anything looser pulls CUDA.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on the embedded default (experiment=quickstart), then an eval of its best checkpoint.
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
demo: install
	$(BIN)/earthcast train hydra.run.dir=$(DEMO_DIR)/train
	$(BIN)/earthcast eval ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt hydra.run.dir=$(DEMO_DIR)/eval
	@echo "demo outputs: $(DEMO_DIR)"

# PreDiff: VAE -> latent diffusion -> knowledge alignment -> `earthcast sample`, chained by checkpoint paths
# on the synthetic SEVIR-LR twin (docs/prediff.md)
prediff-demo: install
	EARTHCAST=$(BIN)/earthcast scripts/prediff_quickstart.sh outputs/prediff_demo/$(shell date +%Y-%m-%d_%H-%M-%S)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf $(VENV) outputs .pytest_cache
