# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   installs into .venv, then runs APR against a clean-trained twin, end to end
#   make test   installs into .venv, then runs the test suite
#   make head   installs into .venv, then starts a local Ray head for `advrec submit`
#   make torchrec  adds torchrec (optional: sharded embedding tables) to .venv
# The CPU build of PyTorch is installed first; GPU users set TORCH_SPEC (or bring their own torch).

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# torchrec (model.embeddings=torchrec) needs the fbgemm matching it: the CPU build here, GPU
# users set FBGEMM_SPEC=fbgemm-gpu==1.8.0
FBGEMM_SPEC ?= fbgemm-gpu-cpu==1.8.0
TORCHREC_SPEC ?= torchrec==1.8.0
PYTEST_ARGS ?=

.PHONY: install torchrec demo test head head-stop clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

# PyPI's torchrec requires the CUDA fbgemm-gpu: install the chosen fbgemm first, torchrec's other
# requirements (the extra), then torchrec itself without its requirements
$(VENV)/.torchrec: $(VENV)/.installed
	$(PY) -m pip install -q "$(FBGEMM_SPEC)" -e ".[torchrec]"
	$(PY) -m pip install -q --no-deps "$(TORCHREC_SPEC)"
	touch $@

torchrec: $(VENV)/.torchrec

demo: install
	$(VENV)/bin/advrec demo

test: install torchrec
	$(PY) -m pytest -q $(PYTEST_ARGS)

# A local Ray head for `advrec submit` (README: "From one machine to a cluster"): token
# authentication on (the token in ~/.ray/auth_token, made once), the job server on 127.0.0.1:8265,
# and .venv/bin first on the PATH of its jobs, so their `advrec` is this one.
head: install
	$(VENV)/bin/ray get-auth-token --generate > /dev/null
	PATH="$(abspath $(VENV))/bin:$$PATH" RAY_AUTH_MODE=token $(VENV)/bin/ray start --head \
		--dashboard-host=127.0.0.1 --disable-usage-stats

head-stop:
	$(VENV)/bin/ray stop

clean:
	rm -rf $(VENV) runs
