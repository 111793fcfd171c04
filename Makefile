# The two commands of the README: `make run` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/semsearch/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
MODEL ?= hub
MODELS_DIR ?= .cache/models

.PHONY: install protos contract run test test-fast typecheck browser clean bench lock test-deploy docker-engine axe
install: $(STAMP) $(GENERATED)

# Everything the tests need, at the versions of uv.lock (requirements/dev.txt, hash-checked), then the CPU
# build of torch for export and reference checks (a local file on our machines; kept out of the lock), then
# the project itself without dependencies. pip, not `uv pip sync`: only pip reads the machine's pip.conf,
# which points at the local torch wheel.
$(STAMP): pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements/dev.txt
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# After a change to pyproject.toml's dependencies: re-resolve uv.lock and export requirements/*.txt.
# `make lock UPGRADE=--upgrade` moves every pin to the newest release.
lock: $(STAMP)
	$(VENV)/bin/uv lock $(UPGRADE)
	$(PY) requirements/export.py

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

test: install browser axe contract
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# Unit, servicer and route tests only: no Postgres, torch, Chromium, system or slow tests (under a minute).
FAST := not db and not browser and not torch and not system and not slow and not deploy
test-fast: install
	$(PY) -m pytest -q -m "$(FAST)" -p no:schemathesis

# The container test (tests/deploy): builds the service images (the CUDA one too), runs Postgres, index,
# embedder and gateway in Docker, uploads, loads and searches through the gateway, SIGKILLs the index and
# Postgres and checks nothing was lost; prints its durations. Uses the running engine, or starts a dockerd.
test-deploy: install docker-engine
	$(PY) -m pytest -q tests/test_deploy_static.py tests/test_packaging.py
	$(PY) -m pytest -m deploy -s -q -p no:cacheprovider tests/deploy

# Docker's engine and debootstrap (for a local base image) from Debian, when missing and we may.
docker-engine:
	@if { ! command -v dockerd || ! command -v debootstrap; } >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap \
			|| echo "could not install docker.io: the container test will skip"; fi

# mypy --strict over the packages listed in pyproject.toml's [tool.mypy]: the six services, protos' tools, bench.
typecheck: install
	$(PY) -m mypy

# The browser tests drive Debian's Chromium; install it when missing and we may (root with apt-get).
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

bench: install
	$(PY) -m bench.embedder

clean:
	rm -rf $(VENV) .cache protos/semsearch/v1/*_pb2*.py protos/semsearch/v1/*_pb2*.pyi

# axe-core, the page's accessibility checker (gateway/tests/test_page_a11y.py), from npm into .cache/axe.
axe: install
	$(PY) -m tests.support.axe
