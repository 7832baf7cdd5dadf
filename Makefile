# Ferrobank: the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DEV_DIR ?= .dev
CARGO ?= cargo

.PHONY: help run stop test bench bench-load lint python-client client-scenarios fmt proto-lint migration-lint deps build clean-dev

help: ## List targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

deps: ## Install missing system packages (Redis, PgBouncer, libclang) with apt-get.
	@scripts/deps.sh

build: deps ## Build the ferrobank binary (release).
	$(CARGO) build --release --locked --bin ferrobank

run: build ## Start Postgres primary+replica and Redis under .dev/, migrate, run `ferrobank all`.
	@mkdir -p $(DEV_DIR) && chmod 755 $(DEV_DIR)
	@scripts/stack.sh start $(DEV_DIR)
	@scripts/run.sh $(DEV_DIR)

stop: ## Stop the .dev/ stack (data is kept; `make clean-dev` deletes it).
	@scripts/stack.sh stop $(DEV_DIR)

clean-dev: ## Stop the .dev/ stack and delete its data.
	@scripts/stack.sh destroy $(DEV_DIR)

test: deps python-client ## Throwaway stack on free ports, every test in the workspace, teardown.
	@scripts/test.sh

bench: deps ## Criterion benches (store layer, hot code, gateway) and the end-to-end load scenarios; see benches/README.md.
	@scripts/test.sh --bench
	@scripts/bench-load.sh

bench-load: deps ## End-to-end gRPC load benchmark with the pgbench comparison (BENCH_SECONDS=20).
	@scripts/bench-load.sh

lint: deps proto-lint migration-lint ## fmt, clippy -D warnings, buf lint, migration lint.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

python-client: ## Install grpcio-tools into .tools/ and generate Python stubs in clients/python/.
	@clients/python/generate.sh >/dev/null

client-scenarios: python-client ## Run the Python and buf curl scenarios against `make run`.
	@PY=$$(clients/python/generate.sh) && PW=$$(cat $(DEV_DIR)/secrets/operator-password) && \
	  "$$PY" clients/python/scenario.py 127.0.0.1:50051 ops "$$PW" && \
	  clients/python/scenario_buf.sh 127.0.0.1:50051 ops "$$PW"

fmt: ## Format the code.
	$(CARGO) fmt --all

proto-lint: ## buf lint (STANDARD + COMMENTS) over proto/.
	@cd proto && "$$(../scripts/tools.sh buf)" lint

migration-lint: ## The AST-based migration linter over migrations/.
	$(CARGO) run --quiet --locked --bin ferrobank -- lint-migrations migrations
