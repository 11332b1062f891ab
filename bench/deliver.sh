#!/usr/bin/env bash
# deliver(8) beside the other local delivery agents: time per message for
# N runs (default 1000) of a 10 KB message into a Maildir, run in
# interleaved rounds so machine noise hits every program alike. /bin/true
# fed the same message is the floor (fork+exec of the shell loop); a Go
# program that only reads stdin to EOF, built here, is the Go floor: what
# the Go runtime's own start costs before deliver does anything.
# Usage: bench/deliver.sh [RUNS]   (needs bin/deliver: make bin; go for the
# Go floor)
# BENCH_DELIVER_AB=PATH adds a second deliver build (e.g. main's, built
# with CGO_ENABLED=0 as the Makefile does) as "deliver B", measured in the
# same rounds, so a change is compared on one machine state.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1000}
ROUNDS=10
PER=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
DELIVER=$PWD/bin/deliver
[ -x "$DELIVER" ] || { echo "bin/deliver missing: run make bin" >&2; exit 1; }
W=$(mktemp -d /tmp/letterbox-bench-deliver.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"

# A 10 KB message: header and base64 text, LF line ends, as an MDA gets it.
{
  printf 'From: Bench <bench@example.test>\nTo: user@example.test\nSubject: bench\nMessage-ID: <bench@example.test>\nDate: Mon, 23 Nov 2026 12:00:00 +0000\n\n'
  head -c 7400 /dev/urandom | base64 -w 76
} > "$W/msg"

names=() ; cmds=()
add() { names+=("$1"); cmds+=("$2"); }
add "/bin/true (floor)" "/bin/true"
if command -v go >/dev/null; then
  mkdir -p "$W/gofloor"
  cat > "$W/gofloor/main.go" <<'GO'
// Reads stdin to EOF and exits: the Go runtime's start and exit, nothing else.
package main

import "os"

func main() {
	var b [32 << 10]byte
	for {
		if n, err := os.Stdin.Read(b[:]); n == 0 || err != nil {
			return
		}
	}
}
GO
  printf 'module gofloor\n\ngo 1.22\n' > "$W/gofloor/go.mod"
  if (cd "$W/gofloor" && GOFLAGS= go build -trimpath -o "$W/gofloor/gofloor" . ) 2>"$W/err"; then
    add "Go hello world (floor)" "$W/gofloor/gofloor"
  else
    echo "Go floor not built:" >&2; cat "$W/err" >&2
  fi
fi
add "deliver" "$DELIVER --log-level error -f bench@example.test --maildir $W/deliver"
if [ -n "${BENCH_DELIVER_AB:-}" ]; then
  [ -x "$BENCH_DELIVER_AB" ] || { echo "BENCH_DELIVER_AB=$BENCH_DELIVER_AB: not an executable" >&2; exit 1; }
  add "deliver B" "$BENCH_DELIVER_AB --log-level error -f bench@example.test --maildir $W/deliverB"
fi
if [ "$(id -u)" = 0 ]; then
  # Root delivering into a mailbox that is not root's: the delivery runs in
  # a child process as the owner (issue 15), deliver started once more.
  mkdir -p "$W/owned" && chown nobody "$W/owned"
  add "deliver as root, owner nobody (child)" "$DELIVER --log-level error -f bench@example.test --maildir $W/owned/Maildir"
fi
if command -v procmail >/dev/null; then
  printf 'LOGFILE=/dev/null\nDEFAULT=%s/procmail/\n' "$W" > "$W/procmailrc"
  mkdir -p "$W/procmail"/{tmp,new,cur}
  add "procmail" "procmail -m $W/procmailrc"
fi
if command -v maildrop >/dev/null; then
  printf 'to "%s/maildrop/"\n' "$W" > "$W/mailfilter"; chmod 600 "$W/mailfilter"
  mkdir -p "$W/maildrop"/{tmp,new,cur}
  add "maildrop" "maildrop $W/mailfilter"
fi
if [ -x /usr/lib/dovecot/dovecot-lda ] && command -v setpriv >/dev/null; then
  # dovecot-lda refuses to run as root without a userdb: run it as nobody.
  mkdir -p "$W/dovecot"
  cat > "$W/dovecot/dovecot.conf" <<CONF
base_dir = $W/dovecot/run
log_path = /dev/stderr
info_log_path = /dev/null
mail_location = maildir:$W/dovecot/Maildir
ssl = no
protocols =
postmaster_address = postmaster@example.test
CONF
  chown -R nobody "$W/dovecot"
  add "setpriv /bin/true (floor)" "setpriv --reuid=nobody --regid=nogroup --clear-groups /bin/true"
  add "dovecot-lda (via setpriv)" "setpriv --reuid=nobody --regid=nogroup --clear-groups env -i HOME=$W/dovecot USER=nobody /usr/lib/dovecot/dovecot-lda -c $W/dovecot/dovecot.conf -f bench@example.test"
fi

# CPU time (user+sys) of the finished children so far, in microseconds,
# into CPU: less sensitive to a busy machine than wall time. `times` must
# run in this shell (not a $(subshell)) to see our children.
cpu_now() {
  times > "$W/times"
  CPU=$(awk 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    printf "%d", t * 1e6 }' "$W/times")
}

declare -A total cpu
for n in "${names[@]}"; do total[$n]=0; cpu[$n]=0; done
for ((r = 0; r < ROUNDS; r++)); do
  for i in "${!names[@]}"; do
    c=${cmds[$i]}
    cpu_now; c0=$CPU
    s=$(date +%s%N)
    for ((k = 0; k < PER; k++)); do $c < "$W/msg" >/dev/null 2>"$W/err" || { echo "${names[$i]} failed:" >&2; cat "$W/err" >&2; break 2; }; done
    e=$(date +%s%N)
    total[${names[$i]}]=$(( ${total[${names[$i]}]} + e - s ))
    cpu_now
    cpu[${names[$i]}]=$(( ${cpu[${names[$i]}]} + CPU - c0 ))
  done
done

n=$((PER * ROUNDS))
ms() { awk -v t="$1" -v n="$n" 'BEGIN { printf "%.3f", t / n / 1e6 }'; }
d=${total[deliver]}
p=${total[procmail]:-0}
g=${total["Go hello world (floor)"]:-0}
printf '%s runs each, 10 KB message into a Maildir (%s, load %s)\n' "$n" "$(uname -sr)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-28s %12s %12s %12s %14s\n' program ms/message "÷ deliver" "÷ procmail" "CPU ms/message"
for nm in "${names[@]}"; do
  t=${total[$nm]}
  rd=$(awk -v a="$t" -v b="$d" 'BEGIN { printf "%.2f", a / b }')
  rp=$( [ "$p" -gt 0 ] && awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }' || echo -)
  printf '%-28s %12s %12s %12s %14s\n' "$nm" "$(ms "$t")" "$rd" "$rp" "$(ms $(( ${cpu[$nm]} * 1000 )))"
done
if [ "$p" -gt 0 ]; then
  awk -v d="$d" -v p="$p" 'BEGIN { printf "deliver / procmail = %.2f (target <= 0.75)\n", d / p }'
  awk -v d="${cpu[deliver]}" -v p="${cpu[procmail]}" 'BEGIN { if (p > 0) printf "CPU: deliver / procmail = %.2f\n", d / p }'
fi
m=${total[maildrop]:-0}
if [ "$m" -gt 0 ]; then
  awk -v d="$d" -v m="$m" 'BEGIN { printf "deliver / maildrop = %.2f (target <= 1)\n", d / m }'
  awk -v d="${cpu[deliver]}" -v m="${cpu[maildrop]}" 'BEGIN { if (m > 0) printf "CPU: deliver / maildrop = %.2f\n", d / m }'
fi
b=${total["deliver B"]:-0}
if [ "$b" -gt 0 ]; then
  awk -v d="$d" -v b="$b" 'BEGIN { printf "deliver / deliver B = %.2f\n", d / b }'
  awk -v d="${cpu[deliver]}" -v b="${cpu["deliver B"]}" 'BEGIN { if (b > 0) printf "CPU: deliver / deliver B = %.2f\n", d / b }'
  [ "$m" -gt 0 ] && awk -v b="$b" -v m="$m" 'BEGIN { printf "deliver B / maildrop = %.2f\n", b / m }'
fi
if [ "$g" -gt 0 ]; then
  awk -v d="$d" -v g="$g" 'BEGIN { printf "deliver / Go floor = %.2f\n", d / g }'
  awk -v d="${cpu[deliver]}" -v g="${cpu["Go hello world (floor)"]}" 'BEGIN { if (g > 0) printf "CPU: deliver / Go floor = %.2f\n", d / g }'
  [ "$p" -gt 0 ] && awk -v g="$g" -v p="$p" 'BEGIN { printf "Go floor / procmail = %.2f (no Go program can go below this)\n", g / p }'
fi
for dir in deliver deliverB procmail maildrop dovecot/Maildir; do
  [ -d "$W/$dir/new" ] && printf '%s: %s messages in new/\n' "$dir" "$(ls "$W/$dir/new" | wc -l)"
done
