# presencebridge — see README.md. `make help` lists the targets.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/presencebridge
# Figures for `make bench` (override: make bench BENCH_USERS=15000)
BENCH_USERS  ?= 50000
BENCH_CYCLES ?= 5

.PHONY: help build test test-integration lint demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

build: ## build bin/presencebridge
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/presencebridge

test: ## vet and run every test (unit and integration) with the race detector
	$(GO) vet ./...
	@fmt=$$(gofmt -l .); if [ -n "$$fmt" ]; then echo "gofmt needed: $$fmt"; exit 1; fi
	$(GO) test -race -count=1 -timeout 15m ./...

test-integration: ## only the integration tests (TestIntegration*)
	$(GO) test -race -count=1 -run 'TestIntegration' ./...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

demo: build ## run presencebridge against the built-in simulated tenant
	scripts/demo.sh

bench: build ## poll $(BENCH_USERS) simulated users and print the figures
	$(BIN) bench --users $(BENCH_USERS) --cycles $(BENCH_CYCLES)

clean: ## remove build output
	rm -rf bin dist
