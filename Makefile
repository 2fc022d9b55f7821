# vbackup: `make demo` runs a real backup on a throwaway VM; `make test` runs
# every test layer. Both install what they need (Debian packages, as root).

export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
PREFIX  ?= /usr/local
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X vbackup/commands.Version=$(VERSION)
# The packages that must build without cgo: all but the libvirt binding's
# one importer and main, which links it.
PURE_PKGS = $$($(GO) list ./... | grep -v -e '/virt/libvirtconn$$' -e '^vbackup$$' -e '/internal/testbed$$')

.PHONY: all build deps check test demo install completions clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/vbackup .

# The checks a reviewer runs first; each fails the build.
check: deps
	@echo '== gofmt'; out=$$(gofmt -l .); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	@echo '== go vet'; $(GO) vet ./...
	@echo '== go mod tidy'; $(GO) mod tidy -diff
	@echo '== pure packages build without cgo'; CGO_ENABLED=0 $(GO) build $(PURE_PKGS)
	@echo '== the engine, the job and the fake are vetted without cgo'; CGO_ENABLED=0 $(GO) vet ./job/... ./engine/... ./virt/virtfake/...

# All three layers: pure and golden tests, libvirt's test driver, and a real
# libvirtd + QEMU started here in a throwaway folder and stopped afterwards.
# The engine's and the job's fast tests run first without cgo, against the
# in-memory libvirt: they need neither the binding nor the bed. The real
# daemon's packages take minutes (commands most): go test's default limit
# of 10 minutes a package stopped them on a loaded machine.
test: check
	@echo '== fast tests without cgo or the bed'; CGO_ENABLED=0 $(GO) test -count=1 ./job/... ./engine/... ./virt/virtfake/...
	@bed=$$(mktemp -d /tmp/vbackup-bed.XXXXXX) && \
	  scripts/testbed.sh up "$$bed" >/dev/null && \
	  { VBACKUP_TESTBED="$$bed" $(GO) test -race -count=1 -timeout 30m ./...; rc=$$?; \
	    scripts/testbed.sh down "$$bed"; exit $$rc; }

demo: build
	@scripts/demo.sh bin/vbackup

# The completion scripts are the committed ones (a test keeps them equal to
# what 'vbackup completion SHELL' prints), each in its shell's vendor folder.
install: build
	install -D -m 0755 bin/vbackup $(DESTDIR)$(PREFIX)/bin/vbackup
	install -D -m 0644 completions/vbackup.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/vbackup
	install -D -m 0644 completions/_vbackup $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_vbackup
	install -D -m 0644 completions/vbackup.fish $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/vbackup.fish
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|/usr/local/bin/vbackup|$(PREFIX)/bin/vbackup|g' contrib/systemd/vbackup@.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/vbackup@.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/vbackup@.service
	install -m 0644 contrib/systemd/vbackup@.timer $(DESTDIR)$(PREFIX)/lib/systemd/system/vbackup@.timer
	install -D -m 0644 contrib/systemd/example.env $(DESTDIR)$(PREFIX)/share/doc/vbackup/example.env

# Rewrites completions/ after a change to the scripts in commands/complete_scripts.go.
completions: build
	bin/vbackup completion bash > completions/vbackup.bash
	bin/vbackup completion zsh > completions/_vbackup
	bin/vbackup completion fish > completions/vbackup.fish

clean:
	rm -rf bin
