# Thin wrappers over scripts/; everything also works without make.
PY := .venv/bin/python

.PHONY: setup test check lint fmt golden bench demo pcaps

setup:            ## system tools (Debian, as root) + .venv with the test extras
	scripts/setup.sh

test:             ## pytest + ruff + mypy, as CI runs it (ARGS=... goes to pytest)
	scripts/test.sh $(ARGS)

check: test

lint: setup       ## ruff + mypy only
	.venv/bin/ruff check trafficguard tests
	.venv/bin/mypy

fmt: setup        ## format and autofix
	.venv/bin/ruff format trafficguard tests scripts bench
	.venv/bin/ruff check --fix trafficguard tests scripts bench

golden: setup     ## golden tests against tshark and the real captures
	$(PY) -m pytest -q -m golden $(ARGS)

bench: setup      ## replay benchmark (PACKETS=1000000 by default), then linearity + bytes/flow
	bench/run.sh --packets $(or $(PACKETS),1000000) $(ARGS)
	$(PY) bench/linearity.py

demo:             ## replay pcaps/ into var/ and serve /metrics on :9108
	scripts/demo.sh $(ARGS)

pcaps: setup      ## regenerate pcaps/*.pcap (deterministic; diff should be empty)
	$(PY) scripts/make_sample_pcaps.py pcaps
