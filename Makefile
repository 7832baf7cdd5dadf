# Ferrobank: the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

DEV_DIR ?= .dev
CARGO ?= cargo

.PHONY: help run stop test bench lint fmt proto-lint migration-lint deps build clean-dev

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

test: deps ## Throwaway stack on free ports, every test in the workspace, teardown.
	@scripts/test.sh

bench: deps ## Store-layer and gateway benchmarks against a throwaway stack (see benches/README.md).
	@scripts/test.sh --bench

lint: deps proto-lint migration-lint ## fmt, clippy -D warnings, buf lint, migration lint.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all

proto-lint: ## buf lint (STANDARD + COMMENTS) over proto/.
	@cd proto && "$$(../scripts/tools.sh buf)" lint

migration-lint: ## The AST-based migration linter over migrations/.
	$(CARGO) run --quiet --locked --bin ferrobank -- lint-migrations migrations
