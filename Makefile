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

# The main job on the embedded default (experiment=quickstart): train (the synthetic twin is generated on first
# use), then the batch-job path: `earthcast eval` scores the best checkpoint on the test split and draws the
# plots (train skips its own test, so the test split is scored once). Prints the time and where things are.
DEMO_DIR := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
demo: install
	@start=$$(date +%s) && \
	$(BIN)/earthcast train test_after_fit=false hydra.run.dir=$(DEMO_DIR)/train && \
	$(BIN)/earthcast eval ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt hydra.run.dir=$(DEMO_DIR)/eval && \
	secs=$$(( $$(date +%s) - start )) && \
	echo "" && echo "demo done in $$((secs / 60)) min $$((secs % 60)) s; outputs in $(DEMO_DIR)/" && \
	echo "  scores vs persistence  $(DEMO_DIR)/eval/report.md  (metrics.json, metrics_by_lead.csv)" && \
	echo "  forecast pictures      $(DEMO_DIR)/eval/plots/sequence_0.png, sequence_1.png (the most active test storms)" && \
	echo "  animation              $(DEMO_DIR)/eval/plots/forecast.gif" && \
	echo "  CSI by lead time       $(DEMO_DIR)/eval/plots/csi_vs_lead.png  (dashed: persistence)" && \
	echo "  trained model          $(DEMO_DIR)/train/checkpoints/best.ckpt" && \
	echo "  training curves        tensorboard --logdir $(DEMO_DIR)/train/logs/tensorboard  (or logs/csv/metrics.csv)"

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
