# Sluice: every install step lives here. `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_WORKERS ?= 2

.PHONY: help install nginx chromium lint typecheck test test-core test-realdata test-reliability-smoke reliability reliability-short demo bench lock clean \
	flink-venv flink-lock flink-jars flink-jar test-flink bench-flink bench-flink-app

help:
	@echo "make test   - create .venv, install pinned dependencies, lint (ruff, import contracts), type-check, run the tests"
	@echo "make test-core - the core alone in a fresh venv with only its declared dependencies (part of make test)"
	@echo "make demo   - run the pipeline locally on generated sample data"
	@echo "make bench  - measure throughput of the core stages; write reports/measurements.json (sluice cost)"
	@echo "make lock   - re-resolve requirements.in into requirements.lock"
	@echo "make reliability - the fault and hostile-input suite at full scale; writes reports/reliability.md"
	@echo "make reliability-short - the same scenarios at a small scale (a few minutes)"
	@echo "make flink-venv - create .venv-flink (PyFlink 2.2.1 and its Flink distribution, the core) from requirements-flink.lock"
	@echo "make flink-jars - fetch the jars of flink_conf/jars.lock with Maven into $$HOME/.cache/sluice/jars and verify their SHA-256"
	@echo "make flink-jar  - build build/flink/pyflink-dependencies.jar (the one jar MSF takes: Kinesis source, Iceberg, Hadoop) with Maven; SHA-256 checked against flink_conf/jars.lock"
	@echo "make test-flink - the local Flink cluster test (start, a checkpointed job, TaskManager killed and replaced, stop)"
	@echo "make bench-flink - Flink SQL events/s on the local cluster (the reference for the Flink jobs)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Debian's nginx for the real-nginx end-to-end test (tests/e2e/test_nginx_logs.py): nothing when an
# nginx binary is already there, else apt-get (as root, or through sudo -n). The package's service is
# never started by the test, which runs its own nginx as a foreground process on a loopback port.
NGINX_PACKAGE ?= nginx
nginx:
	@if command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx; then :; \
	elif test "$$(id -u)" = 0; then apt-get install -y --no-install-recommends $(NGINX_PACKAGE) >/dev/null; \
	elif sudo -n true 2>/dev/null; then sudo -n apt-get install -y --no-install-recommends $(NGINX_PACKAGE) >/dev/null; \
	else echo "make nginx: cannot install $(NGINX_PACKAGE) (not root, no sudo): the real-nginx test will skip"; fi

# Debian's chromium for the status-page test (tests/e2e/test_status_page.py, which runs it headless
# against `sluice status --serve` on a loopback port): nothing when a chromium binary is already
# there, else apt-get (as root, or through sudo -n), with `apt-get update` first when the package
# lists are missing. Nothing of it runs outside that test.
CHROMIUM_PACKAGE ?= chromium
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	else \
	  if test "$$(id -u)" = 0; then apt=apt-get; elif sudo -n true 2>/dev/null; then apt="sudo -n apt-get"; else apt=; fi; \
	  if test -z "$$apt"; then echo "make chromium: cannot install $(CHROMIUM_PACKAGE) (not root, no sudo): the status-page test will skip"; \
	  else $$apt install -y --no-install-recommends $(CHROMIUM_PACKAGE) >/dev/null || \
	    { $$apt update >/dev/null && $$apt install -y --no-install-recommends $(CHROMIUM_PACKAGE) >/dev/null; }; fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The core installed as a user would (`pip install .`: its declared dependencies only, versions from
# the lock) into a fresh venv, with the test tools, runs the core's unit tests; a command of a layer
# whose extra is missing must end in one line, exit 2.
CORE_VENV ?= .venv-core
test-core:
	rm -rf $(CORE_VENV) && $(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel -c requirements.lock
	$(CORE_VENV)/bin/python -m pip install --quiet --no-build-isolation -c requirements.lock \
	  . pytest pytest-xdist hypothesis mmdb-writer
	rm -rf build/lib build/bdist.* sluice.egg-info  # pip's build leftovers; build/flink keeps the shaded jar
	$(CORE_VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) tests/unit
	@out=$$($(CORE_VENV)/bin/sluice tables 2>&1); code=$$?; echo "$$out"; \
	  test $$code -eq 2 && test $$(echo "$$out" | wc -l) -eq 1 && echo "$$out" | grep -q "sluice\[query\]"

typecheck: install
	$(BIN)/mypy

test: lint typecheck nginx chromium .venv-checkov
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)
	$(MAKE) --no-print-directory test-reliability-smoke
	$(MAKE) --no-print-directory test-core

# checkov (tests/infra/test_lint.py) pins boto3, networkx and packaging versions that conflict with
# requirements.lock: it gets a venv of its own from a pinned list (like the audit venv below).
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell cksum < infra/aws/checkov-requirements.txt | cut -d' ' -f1)
$(CHECKOV_STAMP): infra/aws/checkov-requirements.txt
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --no-deps -r infra/aws/checkov-requirements.txt
	@rm -f $(CHECKOV_VENV)/.installed-*
	@touch $@

.venv-checkov: $(CHECKOV_STAMP)

# The optional suite over ../shared/realdata (skipped when that folder is absent); also part of `make test`.
test-realdata: install
	$(BIN)/pytest -q tests/realdata

# The reliability suite (tests/reliability, marker `reliability`, deselected from the main pytest run):
# kills, edge faults, endpoint restarts, poison, resharding, fuzzing, a load test and pip-audit on the
# local stack; `make reliability` / `make reliability-short` rewrite reports/reliability.md.
RELIABILITY_ARGS ?= -q -p no:cacheprovider -m reliability tests/reliability
RELIABILITY_SHORT_ARGS ?= $(RELIABILITY_ARGS)
# Its smoke scale is part of `make test`: every scenario small (40 generated fuzz inputs per target and
# the corpus inputs up to 1 MiB, 2 s of load at 4 connections, one request per edge fault), except
# kill and endpoint_restart (tests/e2e/test_job_kill_restart.py and test_job_endpoint_outage.py cover
# them in the main run) and pip-audit; its report goes to .reliability-smoke/, never to reports/.
RELIABILITY_SMOKE_ARGS ?= -q -p no:cacheprovider -n $(PYTEST_WORKERS) -m reliability tests/reliability
test-reliability-smoke: install
	rm -rf .reliability-smoke
	SLUICE_RELIABILITY_SCALE=smoke SLUICE_RELIABILITY_RESULTS=.reliability-smoke $(BIN)/pytest $(RELIABILITY_SMOKE_ARGS)
# pip-audit is not in the lock (it needs an online vulnerability service); best effort, in a venv
# of its own: the scenario says "not run" and why when it is missing or cannot reach a service.
AUDIT_VENV ?= .venv-audit
$(AUDIT_VENV)/bin/pip-audit:
	-$(PYTHON) -m venv $(AUDIT_VENV) && $(AUDIT_VENV)/bin/python -m pip install --quiet pip-audit

reliability: install $(AUDIT_VENV)/bin/pip-audit
	SLUICE_RELIABILITY_SCALE=full $(BIN)/pytest $(RELIABILITY_ARGS)

reliability-short: install $(AUDIT_VENV)/bin/pip-audit
	SLUICE_RELIABILITY_SCALE=short $(BIN)/pytest $(RELIABILITY_SHORT_ARGS)

# The whole pipeline locally: moto server, the real edges, the Beam job, Iceberg tables, DuckDB.
demo: install
	$(BIN)/python -m infra.local.demo

# One run, side by side (benchmarks/bench.py): the core stages per source, DuckDB (1 thread) and Flink
# SQL (.venv-flink, `make flink-venv`; a row says "not run" without it) on the same seeded input at
# each of BENCH_SIZES, peak RSS per size, the Beam job at each size (benchmarks.job: moto fill, the
# job, sluice replay of its archive), PASS/FAIL targets; table on stdout, JSON in reports/bench.json.
# 18 min at 1M on this shared 2-core machine (2026-12-01, load 14-17; inputs 3 min); the job part
# takes 4-7 min at 1M and ~18 min at 5M (measured 2026-12-01, load 1-5: fill 3, job 6.5, replay 8), and
# 5M adds roughly five times the rest of the per-size part (about an hour):
# `make bench BENCH_SIZES=1000000` for the short run. The last step measures
# what `sluice cost` prices into reports/measurements.json, which is committed.
BENCH_SIZES ?= 1000000,5000000
bench: install
	$(BIN)/python -m benchmarks.bench --sizes $(BENCH_SIZES) --json reports/bench.json
	$(BIN)/python -m benchmarks.measure --job-events 100000 --out reports/measurements.json

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -r requirements.in
	{ echo "# Generated by 'make lock' from requirements.in on Python 3.11 (pip freeze of a fresh venv). Do not edit."; \
	  .lock-venv/bin/python -m pip freeze; } > requirements.lock
	rm -rf .lock-venv

# .venv-flink: PyFlink pins Beam <= 2.61 and pyarrow < 17, so it has its own environment and lock.
# Python 3.12 (pyenv), the interpreter of MSF's FLINK-2_2 runtime: the Python workers of the local
# cluster load exactly the cp312 wheels the MSF application ships in dep/.
FLINK_VENV   ?= .venv-flink
FLINK_JAR    := build/flink/pyflink-dependencies.jar
FLINK_PYTHON ?= $(shell pyenv prefix 3.12.1 2>/dev/null || echo /nonexistent)/bin/python3.12
FLINK_STAMP  := $(FLINK_VENV)/.installed-$(shell cat requirements-flink.lock pyproject.toml | cksum | cut -d' ' -f1)

$(FLINK_STAMP): requirements-flink.lock pyproject.toml
	@test -x $(FLINK_PYTHON) || { echo "make flink-venv: Python 3.12 not found at $(FLINK_PYTHON): run 'pyenv install 3.12.1' or set FLINK_PYTHON"; exit 2; }
	@test -x $(FLINK_VENV)/bin/python || $(FLINK_PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/python -m pip install --quiet --upgrade pip "setuptools>=77"
	$(FLINK_VENV)/bin/python -m pip install --quiet -r requirements-flink.lock
	$(FLINK_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(FLINK_VENV)/.installed-*
	@touch $(FLINK_STAMP)

flink-venv: $(FLINK_STAMP)

# The local Flink cluster for real (tests/flink, marker `flink`, deselected from `make test`): start,
# a checkpointed PyFlink job, the TaskManager SIGKILLed and replaced, recovery, stop; the Kinesis
# source; the PyFlink application from its zip against the Beam job, from the archive and from a
# moto stream, and with a TaskManager killed mid-run (8.5-9.5 min at load average 5-8 on 2 cores).
test-flink: install flink-venv $(FLINK_JAR)
	$(BIN)/pytest -q -p no:cacheprovider -m flink tests/flink

# The jars of flink_conf/jars.lock, fetched with Maven into $(JAR_CACHE) (outside the repository) and
# checked against their SHA-256; one line per jar that is not served or fails. JARS_SET=pyflink
# fetches only the PyFlink job's set (the Beam job server of set `beam` is not served here).
JAR_CACHE ?= $(HOME)/.cache/sluice/jars
MVN ?= mvn
JARS_SET  ?=
flink-jars: install
	SLUICE_JAR_CACHE=$(JAR_CACHE) $(BIN)/python -m flink_jobs.jars fetch $(if $(JARS_SET),--set $(JARS_SET))

# Flink SQL events/s on a local cluster (the reference for the Flink jobs): 1M seeded readings.
# The ONE shaded jar of the PyFlink job (MSF's `jarfile`): Maven fetches the pinned dependencies of
# flink_jobs/java/pom.xml at build time (strict checksums), builds Sluice's Kinesis source and shades
# everything into build/flink/pyflink-dependencies.jar; then every jar that went in is checked against
# flink_conf/jars.lock's SHA-256 (the jar is deleted when one differs). About 2-3 minutes on 2 cores.
flink-jar: install
	cd flink_jobs/java && $(MVN) -B -q -C package
	$(BIN)/python -m flink_jobs.jars verify-build

# Rebuilt only when a source, a pom or the manifest changed (make test-flink uses it).
$(FLINK_JAR): $(shell find flink_jobs/java -name '*.java' -o -name pom.xml) flink_conf/jars.lock
	$(MAKE) flink-jar

bench-flink: install flink-venv
	$(BIN)/python -m benchmarks.flink_sql

# The PyFlink (MSF) application's events/s at p=1, p=2 and per record, beside Flink SQL (same readings).
bench-flink-app: install flink-venv $(FLINK_JAR)
	$(BIN)/python -m benchmarks.flink_app --json reports/flink_app_bench.json

flink-lock:
	rm -rf .lock-venv-flink && $(FLINK_PYTHON) -m venv .lock-venv-flink
	.lock-venv-flink/bin/python -m pip install --quiet --upgrade pip "setuptools>=77"
	.lock-venv-flink/bin/python -m pip install --quiet -r requirements-flink.in
	{ echo "# Generated by 'make flink-lock' from requirements-flink.in on Python 3.12.1 (pip freeze of a fresh venv). Do not edit."; \
	  .lock-venv-flink/bin/python -m pip freeze; } > requirements-flink.lock
	rm -rf .lock-venv-flink

clean:
	rm -rf $(VENV) $(CORE_VENV) $(AUDIT_VENV) $(CHECKOV_VENV) $(FLINK_VENV) .reliability .reliability-smoke .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
