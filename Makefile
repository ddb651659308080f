# presencebridge — see README.md. `make help` lists the targets.
GO       ?= go
VERSION  ?= $(shell scripts/version.sh)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/presencebridge
DEBVERSION ?= $(shell scripts/version.sh deb)
MSIVERSION ?= $(shell scripts/version.sh msi)

.PHONY: help build build-windows deb msi demo bench test test-integration fuzz lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

build: ## build bin/presencebridge
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/presencebridge

build-windows: ## cross-build bin/presencebridge.exe (CGO off)
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN).exe ./cmd/presencebridge

msi: build-windows ## build dist/presencebridge-<version>-x64.msi (needs Debian's wixl and msitools)
	scripts/build-msi.sh $(BIN).exe $(MSIVERSION) dist

deb: build ## build dist/presencebridge_<version>_amd64.deb (needs dpkg-deb, on every Debian)
	scripts/build-deb.sh $(BIN) $(DEBVERSION) dist

demo: build ## run presencebridge against the built-in simulated tenant
	scripts/demo.sh

bench: build ## poll 50,000 simulated users; deliver a 15,000-change burst to Kamailio and HTTP; show calls through Kamailio in Teams; Teams-to-PBX latency at 50,000 users; print the figures
	$(BIN) bench --users 50000 --cycles 5
	$(BIN) bench delivery --changes 15000
	$(BIN) bench calls --calls 50 --burst 100
	$(BIN) bench latency --users 50000 --markdown

test: ## vet and run every test (unit and integration) with the race detector
	$(GO) vet ./...
	@fmt=$$(gofmt -l .); if [ -n "$$fmt" ]; then echo "gofmt needed: $$fmt"; exit 1; fi
	CGO_ENABLED=0 GOOS=windows $(GO) build -o /dev/null ./cmd/presencebridge
	$(GO) test -race -count=1 -timeout 15m ./...

test-integration: ## only the integration tests (TestIntegration*)
	$(GO) test -race -count=1 -run 'TestIntegration' ./...

FUZZTIME ?= 30s
# How long the fuzzer may shrink an input it found (Go's default, 60s, can eat a
# whole FUZZTIME on the big seeds).
FUZZMINIMIZETIME ?= 10s

fuzz: ## run each fuzz target for FUZZTIME (default 30s, e.g. FUZZTIME=5m make fuzz)
	@failed=; for file in $$(grep -rl --include='*_test.go' '^func Fuzz' cmd internal); do \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "== $$target in ./$$(dirname $$file) for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./$$(dirname $$file) || failed="$$failed $$target"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed (inputs in testdata/fuzz/<target>/)"; exit 1; fi

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

clean: ## remove build output
	rm -rf bin dist
