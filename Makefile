# One place for tooling. `make up` and `make test` are the README's two commands: each installs
# what it needs (Debian packages and a virtualenv in .venv) on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The interpreter the virtualenv is built on: Debian's python3.11 when present. It is built
# with profile-guided and link-time optimisation and runs Petrel with ≈ 13 % less CPU per
# message than a plain source build (pyenv's default) that may come first on PATH
# (BENCHMARKS.md, "Seventh session: the interpreter"). BASE_PYTHON=... picks another one.
BASE_PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
# docker-compose validates compose/compose.yaml (no daemon needed); prometheus brings promtool
# and the server the dashboard test evaluates every query with. Installing never starts their
# system daemons: a temporary policy-rc.d refuses service starts (postfix, prometheus).
APT_PACKAGES := postfix dnsmasq-base swaks docker-compose prometheus
STAMP := $(VENV)/.installed

.PHONY: up test unit service e2e lint typecheck proto proto-check bench deps system-deps clean \
	metrics-doc compose-check fuzz bench-stages bench-paired bench-rtt

$(STAMP): pyproject.toml
	@# Debian's venv module (ensurepip) is a package of its own.
	test -x $(PY) || $(BASE_PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -q --no-install-recommends python3-venv >/dev/null; }
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q >/dev/null; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  rc=$$?; [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

up: deps
	$(VENV)/bin/petrel up $(ARGS)

test: system-deps deps proto-check lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest -q tests/unit

service: deps
	$(PY) -m pytest -q tests/service

e2e: system-deps deps
	$(PY) -m pytest -q tests/e2e

lint: deps
	$(VENV)/bin/ruff check .

typecheck: deps
	$(VENV)/bin/mypy

proto: deps
	PYTHON=$(PY) scripts/gen_protos.sh

# Fails when the committed generated code differs from what the protos produce.
proto-check: deps
	PYTHON=$(PY) scripts/check_protos.sh

# docs/metrics.md from the services' metric declarations (tests/unit/test_metrics_catalogue.py
# fails when it is stale).
metrics-doc: deps
	$(PY) -m petrel.metrics_catalogue > docs/metrics.md

# compose/: the compose file as docker-compose 1.29 reads it, the Prometheus config and rules,
# and the alerts' unit tests.
compose-check: system-deps
	docker-compose -f compose/compose.yaml config -q
	promtool check config compose/prometheus/prometheus.yml
	promtool check rules compose/prometheus/alerts.yml
	cd compose/prometheus && promtool test rules alerts_test.yml

# Petrel beside a private Postfix relay, smtp-source -> MTA -> smtp-sink, every scenario of the
# performance issue (benchmarks/bench.py; ARGS="--quick" for a short run, "--repeat 3" for
# median and spread). Heavy: on a shared machine run `flock /tmp/petrel-bench.lock make bench`.
bench: system-deps deps
	$(PY) benchmarks/bench.py $(ARGS)

# A million queued messages behind a refusing destination: scheduler RSS, spool on disk,
# rebuild and restart-to-first-delivery times, drain rate (ARGS="--messages 20000" is quick).
bench-scale: system-deps deps
	$(PY) benchmarks/scale.py $(ARGS)

# Steady load for --minutes (default 10): RSS of every service sampled, memory growth judged.
bench-steady: system-deps deps
	$(PY) benchmarks/steady.py $(ARGS)

# Delivered rate with 1, 2 and 4 egress processes against a slow sink (benchmarks/stages.py),
# e.g. ARGS="--repeat 3 --messages 2000".
bench-stages: system-deps deps
	$(PY) benchmarks/stages.py $(ARGS)

# Two Petrel trees measured at the same time (benchmarks/paired.py): CPU per message and
# delivered rate of B relative to A, e.g. ARGS="/tmp/base . --rounds 6".
bench-paired: system-deps deps
	$(PY) benchmarks/paired.py $(ARGS)

# Delivered rate through a relay adding 40 ms of round trip, egress pipelining on and off
# (benchmarks/rtt.py).
bench-rtt: system-deps deps
	$(PY) benchmarks/rtt.py $(ARGS)

# Bounded SMTP fuzzing of a real ingress (docs/hardening.md), e.g. ARGS="--seconds 300".
fuzz: deps
	$(PY) benchmarks/fuzz_smtp.py $(ARGS)

clean:
	rm -rf petrel-data .pytest_cache .mypy_cache .ruff_cache
