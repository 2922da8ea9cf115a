# Entry points. `make up` runs the mesh; `make test` runs the test suite.
# Both set up whatever is missing first (virtualenv, npm packages, generated
# code, development keys and mesh certificates), so they work on a fresh clone.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV)/bin):$(abspath node_modules/.bin):$(PATH)

PROTOS := $(shell find protos/ticketing -name '*.proto' | sort)
PYTEST_ARGS ?=
# Two test runs side by side (two checkouts) need their own databases, vhost and
# Redis databases: TEST_NAMESPACE=ticketing_test_b TEST_REDIS_DB=13 TEST_REPLICAS_REDIS_DB=12.
TEST_NAMESPACE ?= ticketing_test
TEST_REDIS_DB ?= 15
TEST_REPLICAS_REDIS_DB ?= 14
export TEST_NAMESPACE TEST_REDIS_DB

.PHONY: setup protos stubs keys certs rotate-certs up down restart logs test tools lint readme dashboard format bench clean k8s

setup: $(VENV)/.installed node_modules/.installed gen/.stamp gen/stubs.stamp keys certs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	mkdir -p gen/ticketing  # so the editable install maps the generated package
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

protos: gen/.stamp

# Python stubs, Envoy's descriptor set, the OpenAPI document and the Postman
# collection built from it (with the purchase scenario of clients/postman/).
gen/.stamp: $(PROTOS) scripts/protos.sh scripts/openapi.py scripts/postman.mjs \
		clients/postman/purchase.mjs $(VENV)/.installed node_modules/.installed
	scripts/protos.sh $(PY)
	node scripts/postman.mjs gen/openapi.json gen/postman/ticketing.postman_collection.json
	touch $@

# Client stubs of every contract: Go (gen/go, the package tree of
# ticketing.local/gen/go) and TypeScript (gen/ts, protobuf-es); the Python ones
# are gen/ticketing, made above. The templates are buf.gen.go.yaml and
# buf.gen.ts.yaml; the Go plugins are Debian's (`make tools`). Go builds
# offline in GOPATH mode (GO_ENV): the stubs through the link in var/gopath,
# grpc, protobuf and genproto from Debian's /usr/share/gocode.
stubs: gen/.stamp gen/stubs.stamp

gen/stubs.stamp: $(PROTOS) buf.gen.go.yaml buf.gen.ts.yaml node_modules/.installed | tools
	buf generate --template buf.gen.go.yaml
	buf generate --template buf.gen.ts.yaml
	mkdir -p var/gopath/src/ticketing.local/gen
	ln -sfn ../../../../../gen/go var/gopath/src/ticketing.local/gen/go
	touch $@

GO_ENV := GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH=$(abspath var/gopath):/usr/share/gocode

# Development signing keys (access tokens, tickets): made once, never committed.
keys: $(VENV)/.installed gen/.stamp
	$(PY) -m auth keys
	$(PY) -m notification keys

# The development CA and every workload's mTLS certificate in var/tls (DESIGN §13):
# made when missing or near expiry, never committed. `make rotate-certs` issues
# a new CA and new certificates; restart the mesh afterwards (make down up).
certs: $(VENV)/.installed
	$(PY) -m runtime.certs

rotate-certs: $(VENV)/.installed
	$(PY) -m runtime.certs --rotate

REPLICAS ?= 1
up: setup
	$(PY) scripts/mesh.py up --replicas $(REPLICAS)

down:
	$(PY) scripts/mesh.py down

# One service of the running mesh, with the environment `make up` gave it (every
# replica, one after another); the others keep running. KILL=1 skips the drain.
SERVICE ?=
restart:
	@test -n "$(SERVICE)" || { echo "usage: make restart SERVICE=auth|event|payment|booking|notification"; exit 2; }
	$(PY) scripts/mesh.py restart $(SERVICE) $(if $(KILL),--kill)

logs:
	tail -n 40 -F var/log/*.log

# checkov (tests/unit/test_kubernetes.py scans deploy/kubernetes) pins versions
# that conflict with the project's, so it lives in a virtualenv of its own.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov~=3.3'
	touch $@

# deploy/kubernetes/base from the settings (scripts/k8s.py); the tests check it is current.
k8s: $(VENV)/.installed gen/.stamp
	$(PY) scripts/k8s.py render

test: tools setup $(CHECKOV_VENV)/.installed
	$(PY) scripts/mesh.py backing
	$(PY) -m pytest $(PYTEST_ARGS)
	# The booking races again, with event and booking running as two processes each.
	TEST_REPLICAS=2 TEST_NAMESPACE=$(TEST_NAMESPACE)_replicas TEST_REDIS_DB=$(TEST_REPLICAS_REDIS_DB) \
		$(PY) -m pytest tests/e2e/test_booking_http.py -k "race or same_request or contention" $(PYTEST_ARGS)

# Debian's packages the tests use, installed when missing (as root):
# docker-compose checks docker-compose.yml; Go, its protoc plugins and the
# grpc, protobuf (v2 API, with the 1.5 github.com/golang/protobuf shim grpc
# needs) and genproto sources build the Go client without the module proxy;
# Chromium runs clients/web headless (playwright-core drives it); kubectl
# (kubernetes-client) renders deploy/kubernetes, unless a kubectl is there
# already (Google's kubectl package, say, which holds the same path).
DEBS := docker-compose golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev \
	golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-google-genproto-dev \
	chromium kubernetes-client
tools:
	@missing=$$(for deb in $(DEBS); do \
		[ $$deb = kubernetes-client ] && command -v kubectl >/dev/null && continue; \
		dpkg-query -W -f='$${Status}\n' $$deb 2>/dev/null \
		| grep -q '^install ok installed' || echo $$deb; done); \
	[ -z "$$missing" ] || [ "$$(id -u)" != 0 ] || \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && \
		    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; }

lint: setup
	$(VENV)/bin/ruff check .
	cd protos && buf lint
	# Wire and JSON compatibility with main: a client built from main keeps working.
	buf breaking protos --against '.git#branch=main,subdir=protos'

# README.md quotes clients/ and the latest bench table; edit docs/README.template.md.
readme:
	$(PY) scripts/readme.py

# deploy/grafana/on-sale.json is generated from scripts/dashboard.py; a test
# fails while the committed JSON differs from what the generator writes.
dashboard: $(VENV)/.installed
	$(PY) scripts/dashboard.py

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: down
	rm -rf gen var/log var/run var/envoy.json .pytest_cache

# Measures the running mesh (`make up` first); writes bench/results/ and bench/latest.md.
bench: setup
	@$(PY) -c "import socket; socket.create_connection(('127.0.0.1', 8080), 1)" 2>/dev/null \
		|| { echo "the mesh is not running: make up first"; exit 1; }
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) scripts/readme.py
