# Entry points. `make up` runs the mesh; `make test` runs the test suite.
# Both set up whatever is missing first (virtualenv, npm packages, generated
# code, development keys), so they work on a fresh clone.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV)/bin):$(abspath node_modules/.bin):$(PATH)

PROTOS := $(shell find protos/ticketing -name '*.proto' | sort)
PYTEST_ARGS ?=

.PHONY: setup protos keys up down logs test lint format bench clean

setup: $(VENV)/.installed node_modules/.installed gen/.stamp keys

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	mkdir -p gen/ticketing  # so the editable install maps the generated package
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

protos: gen/.stamp

# Python stubs for the services, and the descriptor set Envoy's transcoder
# loads (with error_details.proto, so error details print as JSON).
gen/.stamp: $(PROTOS) scripts/openapi.py $(VENV)/.installed
	rm -rf gen/ticketing gen/descriptors.binpb && mkdir -p gen/ticketing
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	$(PY) -m grpc_tools.protoc -Iprotos --include_imports --include_source_info \
		--descriptor_set_out=gen/descriptors.binpb $(PROTOS) google/rpc/error_details.proto
	$(PY) scripts/openapi.py gen/descriptors.binpb > gen/openapi.json
	touch $@

# Development signing keys (access tokens, tickets): made once, never committed.
keys: $(VENV)/.installed gen/.stamp
	$(PY) -m auth keys
	$(PY) -m notification keys

up: setup
	$(PY) scripts/mesh.py up

down:
	$(PY) scripts/mesh.py down

logs:
	tail -n 40 -F var/log/*.log

test: setup
	$(PY) scripts/mesh.py backing
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	cd protos && buf lint

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: down
	rm -rf gen var/log var/run var/envoy.json .pytest_cache
