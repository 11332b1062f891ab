#!/usr/bin/env bash
# interop-stress.sh: run the interop tests (build tag "interop", names
# TestInterop*) many times in a row while `stress-ng --cpu 2` loads the
# machine, to find the tests that wait for time instead of for a state.
# Not part of make interop or CI (.ci/run runs make interop once); it is the
# campaign that issue 11 ("Interop tests that pass under load") asks for.
#
# What it runs:
#   make bin; stop the daemons the Debian packages started (as
#   tests/interop/run.sh does); stress-ng --cpu 2 in the background (killed
#   on exit); then
#   go test -tags interop -run "${RUN:-^TestInterop}" -count=${COUNT:-30} \
#       -failfast -timeout 170m -v ./tests/
#   and prints, per test, how many times it passed and any FAIL.
#
# Reproduce (the packages of tests/interop/packages.txt installed, e.g. by
# one `make interop`; stress-ng installed; as root, like the tests):
#   scripts/interop-stress.sh                         # 30 rounds of the suite
#   RUN='^TestInteropPOP3Mutt$' COUNT=30 scripts/interop-stress.sh
#   STRESS=0 scripts/interop-stress.sh                # the same, without load
# The log is kept in ${LOG:-/tmp/letterbox-interop-stress.log}.
set -euo pipefail
cd "$(dirname "$0")/.."

run=${RUN:-^TestInterop}
count=${COUNT:-30}
log=${LOG:-/tmp/letterbox-interop-stress.log}

make bin

# Daemons that the packages may have started are not ours: the tests run their own.
for s in postfix dovecot rspamd clamav-daemon clamav-freshclam clamav-milter spamd spamass-milter opendkim; do (service "$s" stop >/dev/null 2>&1 || true); done

stress_pid=
stop_stress() {
  if [ -n "$stress_pid" ]; then
    kill "$stress_pid" 2>/dev/null || true
    wait "$stress_pid" 2>/dev/null || true
  fi
}
trap stop_stress EXIT
trap 'exit 130' INT TERM
if [ "${STRESS:-1}" != 0 ]; then
  command -v stress-ng >/dev/null || { echo "interop-stress: stress-ng not installed" >&2; exit 1; }
  stress-ng --cpu 2 --quiet &
  stress_pid=$!
fi

start=$(date +%s)
status=0
go test -tags interop -run "$run" -count="$count" -failfast -timeout 170m -v ./tests/ >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - start ))

# Per-test summary: top-level results only (subtests are indented).
echo "interop-stress: run=$run count=$count stress=${STRESS:-1} ${elapsed}s, log $log"
grep -E '^--- (PASS|FAIL|SKIP): ' "$log" | awk '{n[$3" "$2]++} END {for (k in n) printf "  %-45s %s\n", k, n[k]}' | sort || true
if grep -qE '^(--- FAIL|FAIL|panic)' "$log"; then
  echo "interop-stress: FAILURES:"
  grep -nE '^(--- FAIL|FAIL|panic)' "$log" | head -20
fi
tail -1 "$log"
exit "$status"
