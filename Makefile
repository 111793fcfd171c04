# The two commands of the README: `make run` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/semsearch/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
MODEL ?= hub
MODELS_DIR ?= .cache/models

.PHONY: install protos contract run test test-fast browser clean bench
install: $(STAMP) $(GENERATED)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch for export and reference checks (a local file on our machines).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[export,dev]'
	touch $@

protos: $(GENERATED)
$(GENERATED): $(PROTOS) protos/generate.py $(STAMP)
	$(PY) -m protos.generate

# buf lint and buf breaking over protos/ (buf from npm into .cache/buf on first use; see protos/README.md).
contract: install
	$(PY) -m protos.contract

# Obtain a model bundle (MODEL=hub downloads CLIP ViT-B/32 once; MODEL=random builds a meaningless demo
# model of the same shape; MODEL=/path uses a bundle directory), then start and supervise every service.
# ARGS passes more options, e.g. ARGS="--load ~/Pictures --port 9000" (see python -m deploy --help).
run: install
	$(PY) -m deploy --model $(MODEL) --cache $(MODELS_DIR) $(ARGS)

test: install browser contract
	$(PY) -m ruff check .
	$(PY) -m pytest

# Unit, servicer and route tests only: no Postgres, torch, Chromium, system or slow tests (under a minute).
FAST := not db and not browser and not torch and not system and not slow
test-fast: install
	$(PY) -m pytest -q -m "$(FAST)" -p no:schemathesis

# The browser tests drive Debian's Chromium; install it when missing and we may (root with apt-get).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

bench: install
	$(PY) -m bench.embedder

clean:
	rm -rf $(VENV) .cache protos/semsearch/v1/*_pb2*.py protos/semsearch/v1/*_pb2*.pyi
