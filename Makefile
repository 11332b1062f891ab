# letterbox — see README.md.
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(DESTDIR)$(PREFIX)/sbin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
SHAREDIR = $(DESTDIR)$(PREFIX)/share/letterbox
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO      ?= go
COMMANDS = $(notdir $(wildcard cmd/*))
LDFLAGS  = -X letterbox/pkg/config.Version=$(VERSION)
# urfave/cli's Markdown and man page generators (and the Markdown library
# they link, whose tables are built at every start) are not used: our man
# pages are written by hand. Without them each command starts faster, which
# counts for imapd and pop3d started per connection (inetd mode).
TAGS     = urfave_cli_no_docs
# deliver(8) runs once per message: it is linked statically, without cgo
# (os/user then reads /etc/passwd and /etc/group itself), because loading
# libc and cgo's start-up cost it 2-3 ms a message on a VM where page faults
# and thread creation are dear (bench/NOTES-perf.md). The other commands
# keep cgo's user lookups (NSS).
# imapd(8), started per connection in inetd mode, is linked without symbol
# table and DWARF (-s -w; panics still print file:line from the pclntab): on
# a cold page cache the kernel reads the whole binary as the start-up faults
# on it (8 MiB read-ahead here), so 3.5 MB of debug data were ~20 % of a
# cold login (bench/NOTES-perf.md, issue 9).

.PHONY: all test run install interop bench clean lint fuzz

all: bin

bin: $(shell find cmd pkg -name '*.go' -not -name '*_test.go') go.mod go.sum
	@mkdir -p bin
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/ ./cmd/deliver
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS) -s -w' -o bin/ ./cmd/imapd
	ln -sf sendmail bin/mailq
	@touch bin

# The whole suite: formatting, vet, unit and integration tests, the
# concurrent packages under -race, man pages under mandoc and groff
# (scripts/check-man.sh; with CI set, both must exist).
# The packages whose code starts goroutines or shares state between them
# run their unit tests a second time under the race detector (the others,
# pure computation such as the password hashes, would only be slower).
RACE_PKGS = $(addprefix ./,$(sort $(dir $(shell grep -lE '\bgo func|^\s*go [a-zA-Z_]|sync\.(Mutex|RWMutex|WaitGroup|Once)|atomic\.' -r --include=*.go --exclude=*_test.go pkg cmd))))

test: lint
	$(GO) test -count=1 -timeout 8m ./...
	$(GO) test -race -count=1 -timeout 8m $(RACE_PKGS)

lint:
	@out=$$(gofmt -l cmd pkg tests 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	./scripts/check-man.sh

# Short fuzzing of every parser (the seeds in testdata/ also run in `make test`).
fuzz:
	./scripts/fuzz.sh

# A local mail system on loopback high ports with data under ./var.
run: bin
	./scripts/run.sh

# Tests against real third-party clients and peers (installs Debian packages).
interop: bin
	./tests/interop/run.sh

# Benchmarks beside the anchors; prints result tables (installs the peers).
bench: bin
	./bench/run.sh

install: bin
	install -d $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man5 $(MANDIR)/man7 $(MANDIR)/man8 $(SHAREDIR)/contrib
	for c in $(COMMANDS); do install -m 0755 bin/$$c $(BINDIR)/$$c; done
	ln -sf sendmail $(BINDIR)/mailq
	for m in man/*.1; do [ -e "$$m" ] && install -m 0644 $$m $(MANDIR)/man1/ || true; done
	for m in man/*.5; do [ -e "$$m" ] && install -m 0644 $$m $(MANDIR)/man5/ || true; done
	for m in man/*.7; do [ -e "$$m" ] && install -m 0644 $$m $(MANDIR)/man7/ || true; done
	for m in man/*.8; do [ -e "$$m" ] && install -m 0644 $$m $(MANDIR)/man8/ || true; done
	cp -R contrib/. $(SHAREDIR)/contrib/

clean:
	rm -rf bin var
