# AutoPatcher build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
CMDS := autopatchd autopatch-hub mkbundle
FUZZTIME ?= 60s
BENCHTIME ?= 1x
LDFLAGS := -s -w
# Compiler flags of every autopatchd build, one -gcflags per line of
# scripts/autopatchd.gcflags (which says why); the other binaries use the defaults.
GCFLAGS := $(addprefix -gcflags=,$(shell grep -v '^\#' scripts/autopatchd.gcflags))
# Every command and tool but autopatchd.
OTHERCMDS = $(filter-out %/cmd/autopatchd,$(shell $(GO) list ./cmd/... ./tools/...))
# Cross targets for `make check`: GOOS/GOARCH[/GOARM].
CROSS := linux/arm/6 linux/arm/7 linux/arm64 linux/amd64

.PHONY: all build help deps test cross check bench fuzz e2e demo clean

all: build ## build host binaries into bin/

build: ## build host binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath $(GCFLAGS) -o $(BIN)/ ./cmd/autopatchd
	$(GO) build -trimpath -o $(BIN)/ $(OTHERCMDS)

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## install the Debian packages the tests need (as root)
	@scripts/install-deps

test: deps ## install test tools, then run every test
	$(GO) test -count=1 ./...

cross: ## cross-compile every binary for every board into bin/cross/OS-ARCH[vARM]/ (static, stripped; prints sizes)
	@set -e; for t in $(CROSS); do \
	  IFS=/ read -r os arch arm <<<"$$t"; \
	  dir=$(BIN)/cross/$$os-$$arch$${arm:+v$$arm}; mkdir -p $$dir; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags='$(LDFLAGS)' $(GCFLAGS) -o $$dir/ ./cmd/autopatchd; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $$dir/ $(OTHERCMDS); \
	  for f in $$dir/*; do stat -c '%s %n' $$f | awk -v t=$$t '{n=split($$2,p,"/"); printf "%-14s %-16s %6.2f MiB\n", t, p[n], $$1/1048576}'; done; \
	done

check: ## gofmt, go vet, and `make cross`; fails if autopatchd for ARMv7 is over 8 MiB
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(MAKE) --no-print-directory cross
	@size=$$(stat -c %s $(BIN)/cross/linux-armv7/autopatchd); limit=$$((8 * 1048576)); \
	if [ $$size -gt $$limit ]; then echo "autopatchd for linux/arm GOARM=7 is $$size bytes, over the 8 MiB limit"; exit 1; fi

bench: deps ## run the benchmarks; each prints its ratio against the same run's physical limit
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem ./...

fuzz: ## run every fuzz target for FUZZTIME each (default 60s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

e2e: ## boot the armv7 target under QEMU (real U-Boot, kernel, watchdog) and run the A/B update scenarios
	@e2e/fetch.sh
	$(GO) test -tags e2e -count=1 -v -timeout 15m ./e2e/

demo: ## a whole fleet update on this machine: vendor bundle, hub, three devices on simulated A/B boards
	@scripts/demo

clean: ## remove build output
	rm -rf $(BIN)
