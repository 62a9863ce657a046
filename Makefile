# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mlxk-installed

.PHONY: install blas demo test clean

install: $(STAMP) blas

$(STAMP): pyproject.toml setup.py src/mlxk/accel/skinny_gemm.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

# MLX's CPU wheel bundles a slow reference BLAS; mlxk loads OpenBLAS instead when present.
# On Debian/Ubuntu as root, install it; elsewhere this step only says what would help.
blas:
	@sh scripts/ensure-openblas.sh

demo: install
	$(BIN)/mlxk --version
	$(BIN)/mlxk demo

test: install
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) build src/*.egg-info
