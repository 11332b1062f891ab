#!/usr/bin/env bash
# mailuser check beside doveadm pw -t: time to verify one password from a
# script (one process per check, as a script or an auth helper would run
# it), per scheme, with hashes made by doveadm pw so both verify the same
# input. Interleaved rounds so machine noise hits both alike. /bin/true is
# the floor (fork+exec).
# Usage: bench/users.sh [RUNS]   (needs bin/mailuser: make bin; doveadm)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-40}
ROUNDS=4
PER=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
MAILUSER=$PWD/bin/mailuser
[ -x "$MAILUSER" ] || { echo "bin/mailuser missing: run make bin" >&2; exit 1; }
command -v doveadm >/dev/null || { echo "doveadm missing (apt-get install dovecot-core)" >&2; exit 1; }
W=$(mktemp -d /tmp/letterbox-bench-users.XXXXXX)
trap 'rm -rf "$W"' EXIT
PW='bench password'
printf 'hostname = "bench.test"\nusers = "%s/users"\nmail-root = "%s/mail"\n' "$W" "$W" > "$W/conf"
export LETTERBOX_CONFIG=$W/conf

SCHEMES="PLAIN BLF-CRYPT SHA512-CRYPT ARGON2ID"
: > "$W/users"
for s in $SCHEMES; do
  h=$(doveadm pw -s "$s" -p "$PW") || { echo "doveadm pw -s $s failed" >&2; exit 1; }
  echo "$h" > "$W/hash.$s"
  echo "$(echo "$s" | tr 'A-Z' 'a-z')@bench.test:$h" >> "$W/users"
done

# now_ns: a monotonic-enough clock in nanoseconds.
now_ns() { date +%s%N; }
declare -A total
for s in $SCHEMES floor; do total[$s.ours]=0; total[$s.dove]=0; done
for r in $(seq $ROUNDS); do
  t0=$(now_ns); for i in $(seq $PER); do /bin/true; done; t1=$(now_ns)
  total[floor.ours]=$(( total[floor.ours] + t1 - t0 ))
  for s in $SCHEMES; do
    u=$(echo "$s" | tr 'A-Z' 'a-z')@bench.test
    h=$(cat "$W/hash.$s")
    t0=$(now_ns)
    for i in $(seq $PER); do echo "$PW" | "$MAILUSER" check "$u" || echo "mailuser check $u failed" >&2; done
    t1=$(now_ns)
    for i in $(seq $PER); do doveadm pw -t "$h" -p "$PW" >/dev/null 2>&1 || echo "doveadm $s failed" >&2; done
    t2=$(now_ns)
    total[$s.ours]=$(( total[$s.ours] + t1 - t0 ))
    total[$s.dove]=$(( total[$s.dove] + t2 - t1 ))
  done
done
N=$(( PER * ROUNDS ))
ms() { awk -v ns="$1" -v n="$N" 'BEGIN { printf "%.2f", ns / n / 1e6 }'; }
printf 'password check, one process per check, %d runs each (ms per check; lower is better)\n' "$N"
printf '%-14s %16s %16s %8s\n' scheme "mailuser check" "doveadm pw -t" "ratio"
printf '%-14s %16s %16s %8s\n' "/bin/true" "$(ms ${total[floor.ours]})" "" ""
for s in $SCHEMES; do
  o=${total[$s.ours]} d=${total[$s.dove]}
  printf '%-14s %16s %16s %8s\n' "$s" "$(ms $o)" "$(ms $d)" "$(awk -v o="$o" -v d="$d" 'BEGIN { printf "%.2f", o / d }')"
done
echo "(ratio = mailuser / doveadm; both verify the same doveadm-made hash. Go side, in-process: go test -bench Authenticate ./pkg/users/)"
