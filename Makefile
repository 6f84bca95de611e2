# Mamori — build, test and demo.
#
#   make demo     build, start a server on embedded SQLite and three agents (Ctrl-C stops)
#   make test     vet, race-enabled tests, cross-builds of the agent
#   make build    bin/mamori and bin/mamori-agent (CGO_ENABLED=0)

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
export CGO_ENABLED ?= 0

.PHONY: all build cross test test-short vet demo bench bench-agent bench-scan proto clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mamori ./cmd/mamori
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mamori-agent ./cmd/mamori-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mamori-loadtest ./cmd/mamori-loadtest

# The agent must cross-compile (platform code not written yet reports "not
# supported on this platform" at run time).
cross:
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/mamori-agent
	GOOS=darwin  GOARCH=arm64 $(GO) build -o /dev/null ./cmd/mamori-agent
	GOOS=linux   GOARCH=arm64 $(GO) build -o /dev/null ./cmd/mamori-agent
	CGO_ENABLED=0 GOOS=windows GOARCH=amd64 $(GO) build ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l cmd internal)" || (echo "not gofmt-formatted:"; gofmt -l cmd internal; exit 1)

# -race needs cgo; the binaries the end-to-end tests start are built without.
# scripts/with-postgres.sh starts a private PostgreSQL 15 for the store's
# PostgreSQL tests (MAMORI_TEST_POSTGRES) and stops it afterwards.
test: vet cross
	CGO_ENABLED=1 ./scripts/with-postgres.sh $(GO) test -race -count=1 -timeout 15m ./...

test-short:
	$(GO) test -count=1 ./...

demo: build
	./scripts/demo.sh

# Agent-plane benchmarks (memory per idle agent, bytes per check-in, wake-up
# latency); AGENTS=N to change the count. See docs/benchmarks.md.
bench: bench-agent

bench-agent: build
	./scripts/bench-agent.sh

# A policy change and a task run now, each to every one of AGENTS (default
# 19,500: one server process's limit here) connected agents; see
# scripts/bench-agent.sh (SERVER_FLAGS for the server's push rates).
.PHONY: bench-management
bench-management: build
	SCENARIO=management AGENTS=$(or $(AGENTS),19500) ./scripts/bench-agent.sh --ramp 300 --settle 30s

# Scanner vs clamscan vs yara on the generated corpus; see docs/engine.md.
bench-scan:
	./scripts/bench-scan.sh

# Dynamic groups: 100 groups over 20,000 computers after template changes,
# against one group and one computer's change (COMPUTERS=N, COUNT=N runs).
.PHONY: bench-dyngroups
bench-dyngroups:
	./scripts/bench-dyngroups.sh

proto:
	cd internal/agentproto && PATH="$$PATH:$$($(GO) env GOPATH)/bin" buf generate

clean:
	rm -rf $(BIN)
