#!/usr/bin/env bash
# make interop: install the third-party clients and peers (Debian packages
# listed in packages.txt), then run the interop tests (build tag "interop",
# test names TestInterop*) against the real binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkgs=$(sed 's/#.*//' tests/interop/packages.txt | tr -s ' \n' ' ')
missing=()
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Postfix asks how to configure itself; our tests write their own main.cf.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "postfix postfix/mailname string localhost" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Daemons that the packages may have started are not ours: the tests run their own.
for s in postfix dovecot rspamd clamav-daemon clamav-freshclam clamav-milter spamd spamass-milter opendkim; do (service "$s" stop >/dev/null 2>&1 || true); done
go test -tags interop -run '^TestInterop' -count=1 -timeout 20m -v ./tests/ 2>&1 | tee /tmp/letterbox-interop.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' || true
tail -3 /tmp/letterbox-interop.log
grep -q '^ok' /tmp/letterbox-interop.log
