# Two entry points: `make demo` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench lint clean

$(STAMP): pyproject.toml
	@if ! dpkg -s libsuitesparse-dev >/dev/null 2>&1; then \
		echo "installing libsuitesparse-dev (needed by enterprise-pulsar's scikit-sparse)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libsuitesparse-dev; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q numpy"<2.4" cython
	$(PY) -m pip install -q --no-build-isolation "scikit-sparse<0.5"
	$(PY) -m pip install -q -e ".[enterprise,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ptaflow compare

test: $(STAMP)
	$(PY) -m pytest -ra

bench: $(STAMP)
	$(PY) benchmarks/likelihood.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ptaflow tests benchmarks models

clean:
	rm -rf $(VENV) .pytest_cache
