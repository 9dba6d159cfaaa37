# Two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: demo test install clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,integrations]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m runner.train --config configs/sequence_demo.yaml --wandb

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf runs wandb .pytest_cache
