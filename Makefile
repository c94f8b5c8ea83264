# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   installs into .venv, then runs APR against a clean-trained twin, end to end
#   make test   installs into .venv, then runs the test suite
# The CPU build of PyTorch is installed first; GPU users set TORCH_SPEC (or bring their own torch).

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test benchmark clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/advrec demo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
