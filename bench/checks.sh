#!/usr/bin/env bash
# make bench: what the checks on mail in cost smtpd, beside Postfix.
#  1. acceptance rate with SPF (reject), DKIM (verified) and DMARC (enforce)
#     on, against the same smtpd with them off: 2,000 DKIM-signed messages of
#     10 KB that pass all three (records served by a local DNS server), over
#     10 concurrent sessions, a new connection per message, from 127.0.0.2
#     (outside relay-networks); three rounds in turn, medians. Target: the
#     checks cost at most 20%. Also smtpd's CPU time per message, on and
#     off (off/on is the rate the checks would leave smtpd if its CPU were
#     the limit; a loaded machine inflates it too, less than the rates).
#  2. smtpd's peak memory (VmHWM) for one signed message of 10 KB and of
#     30 MB, checks on and off: the checks hash the body as it streams in
#     and stage the message on disk beyond 256 KiB, so their memory does not
#     grow with its size.
#  3. rspamd as a milter: letterbox's smtpd and Postfix's, each with the same
#     rspamd (its milter proxy, Debian's configuration), smtp-source sending
#     500 messages of 10 KB over 10 sessions, three rounds in turn, medians.
#     Both commit
#     durably; Postfix holds what it accepts, as in bench/smtpd.sh.
#     Target: letterbox at least 1.5x Postfix.
# The machine may be shared: compare the ratios, not the absolute numbers.
# Needs root (Postfix's master, rspamd's user).
#
# BENCH_CHECKS_PROFILE=DIR: smtpd built with -tags benchprof; after the
# rounds, one more round of each (on, off) with smtpd's pprof CPU and
# allocation profiles of exactly that round (pkg/benchprof) saved as
# DIR/{on,off}.cpu, DIR/{on,off}.allocs (and .allocs.before), then one of
# each under strace -c -f: DIR/{on,off}.strace.
# BENCH_CHECKS_RSPAMD=0: leave out the rspamd row (it needs minutes).
# BENCH_CHECKS_SMTPD=PATH: measure another build of smtpd.
# BENCH_CHECKS_AB=PATH: measure that build too, in the same rounds (A/B).
# BENCH_CHECKS_ROUNDS=N: rounds (default 3).
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_CHECKS_MSGS:-2000}
RSPAMD_MSGS=${BENCH_CHECKS_RSPAMD_MSGS:-500}
SESS=${BENCH_CHECKS_SESSIONS:-10}
PATH=$PATH:/usr/sbin
PROF=${BENCH_CHECKS_PROFILE:-}
[ -x bin/smtpd ] || make -s bin >/dev/null || { echo "bench/checks: make bin failed"; exit 1; }
T=$(mktemp -d /var/tmp/letterbox-bench-checks.XXXXXX)
chmod 755 "$T"
SMTPD=${BENCH_CHECKS_SMTPD:-bin/smtpd}
if [ -n "$PROF" ]; then
  command -v strace >/dev/null || { echo "bench/checks: strace needed for BENCH_CHECKS_PROFILE"; exit 1; }
  mkdir -p "$PROF" && PROF=$(cd "$PROF" && pwd) || exit 1
  go build -tags benchprof -o "$T/smtpd" ./cmd/smtpd || { echo "bench/checks: cannot build smtpd with -tags benchprof"; exit 1; }
  SMTPD=$T/smtpd
fi
go build -o "$T/checks-bench" ./bench/checks || { echo "bench/checks: cannot build the helper"; exit 1; }
PIDS=()
INSTANCES=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for i in "${INSTANCES[@]}"; do postfix -c "$i/etc" stop >/dev/null 2>&1; done
  sleep 0.5; rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq "${2:-200}"); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
ratio() { python3 -c "print('%.2f' % ($1 / $2 if $2 else 0))"; }
# start NAME CMD…: run CMD in its own process group, remembered for cleanup.
start() { local name=$1; shift; setsid "$@" >"$T/$name.log" 2>&1 & PIDS+=($!); }

"$T/checks-bench" setup -dir "$T" -size 10240,31457280 || exit 1
DNS=127.0.0.1:$(free_port)
start dns "$T/checks-bench" dns -addr "$DNS" -zone "$T/zone"
sleep 0.3

# letterbox NAME PORT EXTRA: an smtpd whose clients are all strangers.
letterbox() {
  local d=$T/$1
  mkdir -p "$d"
  cat > "$d/letterbox.conf" <<CONF
hostname = "mx.example.test"
domains = ["example.test"]
spool = "$d/spool"
mail-root = "$d/mail"
users = "$d/users"
aliases = "$d/aliases"
log-level = "warn"
relay-networks = ["192.0.2.0/24"]
dns = "$DNS"
$3
CONF
  echo "bench@example.test:{PLAIN}x::::::" > "$d/users"
  echo "postmaster: bench@example.test" > "$d/aliases"
  LETTERBOX_CONFIG=$d/letterbox.conf LETTERBOX_PROFILE_DIR=${PROF:+$d} start "$1" "${SMTPD}" --listen 127.0.0.1:$2
  LAST_PID=${PIDS[-1]}
  wait_port "$2" || { echo "bench/checks: smtpd did not start"; cat "$T/$1.log"; exit 1; }
}
OFF='spf = "off"
dkim-verify = "off"
dmarc = "off"'
ON='spf = "reject"
dkim-verify = "tag"
dmarc = "enforce"'

echo "smtpd acceptance with the checks: $MSGS DKIM-signed messages of 10 KB, $SESS sessions, new connection per message, durable"
printf '%-34s %12s %12s %8s\n' "case" "checks on" "checks off" "on/off"
# The build measured, and with BENCH_CHECKS_AB another one, in the same
# rounds: A/B under the same neighbours.
declare -A PORT PID
BUILDS=(this)
BIN_this=$SMTPD
if [ -n "${BENCH_CHECKS_AB:-}" ]; then BUILDS+=(ab); BIN_ab=$BENCH_CHECKS_AB; fi
for b in "${BUILDS[@]}"; do
  bin=BIN_$b
  for m in off on; do
    name=$m; [ "$b" = this ] || name=$b-$m
    mode=$OFF; [ "$m" = on ] && mode=$ON
    PORT[$name]=$(free_port)
    SMTPD=${!bin} letterbox "$name" "${PORT[$name]}" "$mode"; PID[$name]=$LAST_PID
    # Warm up (page cache, DNS).
    "$T/checks-bench" send -server 127.0.0.1:${PORT[$name]} -n 50 -c "$SESS" -msg "$T/msg-10240.eml" >/dev/null
  done
done
SMTPD=$BIN_this
P1=${PORT[off]}; PID_OFF=${PID[off]}; P2=${PORT[on]}; PID_ON=${PID[on]}
# Rounds of off then on, in turn, so a neighbour's load hits both; the
# medians are shown. smtpd's CPU time (user + system, clock ticks) is read
# around each round: what a message costs it.
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
ROUNDS=${BENCH_CHECKS_ROUNDS:-3}
declare -A RATES CPU
for _ in $(seq "$ROUNDS"); do
  for b in "${BUILDS[@]}"; do
    for m in off on; do
      name=$m; [ "$b" = this ] || name=$b-$m
      c0=$(ticks "${PID[$name]}")
      RATES[$name]+="$("$T/checks-bench" send -server 127.0.0.1:${PORT[$name]} -n "$MSGS" -c "$SESS" -msg "$T/msg-10240.eml" || echo 0) "
      c1=$(ticks "${PID[$name]}"); CPU[$name]=$(( ${CPU[$name]:-0} + c1 - c0 ))
    done
  done
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
hz=$(getconf CLK_TCK)
us() { python3 -c "print('%.0f' % ($1 * 1e6 / $hz / ($ROUNDS * $MSGS)))"; }
for b in "${BUILDS[@]}"; do
  on_=on; off_=off; label="SPF+DKIM+DMARC (all pass)"
  [ "$b" = this ] || { on_=$b-on; off_=$b-off; label="$label, $BIN_ab"; }
  # shellcheck disable=SC2086
  on=$(median ${RATES[$on_]}); off=$(median ${RATES[$off_]})
  printf '%-34s %10s/s %10s/s %7sx\n' "$label" "$on" "$off" "$(ratio "$on" "$off")"
  echo "(rounds: on ${RATES[$on_]}; off ${RATES[$off_]})"
  printf '%-34s %9s µs %9s µs %7sx\n' "smtpd CPU per message" "$(us ${CPU[$on_]})" "$(us ${CPU[$off_]})" "$(ratio "${CPU[$off_]}" "${CPU[$on_]}")"
done
if ! grep -q 'dkim=pass header.a=rsa-sha256' "$(ls -d "$T"/on/spool/data/* | head -1)"; then
  echo "bench/checks: the checks did not pass DKIM on the bench message"; fi
if [ -n "$PROF" ]; then
  for c in off:$P1:$PID_OFF on:$P2:$PID_ON; do
    IFS=: read -r name port pid <<< "$c"
    kill -USR1 "$pid"; sleep 0.2
    c0=$(ticks "$pid")
    r=$("$T/checks-bench" send -server 127.0.0.1:$port -n "$MSGS" -c "$SESS" -msg "$T/msg-10240.eml" || echo 0)
    c1=$(ticks "$pid")
    kill -USR1 "$pid"; sleep 0.5
    mv "$T/$name/cpu.1" "$PROF/$name.cpu"; mv "$T/$name/allocs.1.start" "$PROF/$name.allocs.before"
    mv "$T/$name/allocs.1.end" "$PROF/$name.allocs"
    strace -c -f -o "$PROF/$name.strace" -p "$pid" 2>/dev/null & st=$!
    sleep 1 # strace attaches to every thread first
    s=$("$T/checks-bench" send -server 127.0.0.1:$port -n "$MSGS" -c "$SESS" -msg "$T/msg-10240.eml" || echo 0)
    kill -INT "$st"; wait "$st"
    # The profile's samples against the clock ticks of the same round: the
    # per-message CPU of the rounds above moves with the machine's load.
    echo "(profiled round, $name: $r msg/s, smtpd CPU $(python3 -c "print('%.0f' % (($c1 - $c0) * 1e6 / $hz / $MSGS))") µs a message; under strace: $s msg/s; profiles in $PROF/$name.*)"
  done
fi

# Peak memory of a fresh smtpd for one message.
peak() { # NAME EXTRA MSGFILE → VmHWM in kB
  local port; port=$(free_port)
  letterbox "$1" "$port" "$2"
  "$T/checks-bench" send -server 127.0.0.1:$port -n 1 -c 1 -msg "$3" >/dev/null || { echo 0; return; }
  awk '/VmHWM/ {print $2}' /proc/"$LAST_PID"/status
  # started in a subshell: cleanup does not know it
  kill "$LAST_PID"
}
echo
echo "smtpd peak memory (VmHWM) for one DKIM-signed message"
printf '%-34s %12s %12s\n' "message" "checks on" "checks off"
for size in 10240 31457280; do
  m_on=$(peak "mem-on-$size" "$ON" "$T/msg-$size.eml")
  m_off=$(peak "mem-off-$size" "$OFF" "$T/msg-$size.eml")
  printf '%-34s %9s kB %9s kB\n' "$size octets" "$m_on" "$m_off"
done

[ "${BENCH_CHECKS_RSPAMD:-1}" = 0 ] && exit 0
# rspamd, with the settings smtpd(8) gives, its DNS on ours.
command -v rspamd >/dev/null && command -v smtp-source >/dev/null && command -v postfix >/dev/null || {
  echo; echo "bench/checks: rspamd or Postfix not installed (make interop installs them); no rspamd row"; exit 0; }
R=$T/rspamd; mkdir -p "$R"/local/override.d "$R"/local/local.d "$R"/db "$R"/run "$R"/log
RP=$(free_port); RN=$(free_port); RC=$(free_port)
cat > "$R/local/override.d/worker-proxy.inc" <<EOC
bind_socket = "127.0.0.1:$RP";
milter = yes;
timeout = 120s;
upstream "local" { default = yes; self_scan = yes; }
EOC
echo "bind_socket = \"127.0.0.1:$RN\";" > "$R/local/override.d/worker-normal.inc"
echo "bind_socket = \"127.0.0.1:$RC\";" > "$R/local/override.d/worker-controller.inc"
printf 'type = "console";\nlevel = "error";\n' > "$R/local/override.d/logging.inc"
HS=/var/tmp/letterbox-interop-rspamd-hs; mkdir -p "$HS"; chown _rspamd:_rspamd "$HS" "$R/db" "$R/run" "$R/log"
printf 'dns { nameserver = ["%s"]; timeout = 1s; retransmits = 1; }\nhs_cache_dir = "%s/";\n' "$DNS" "$HS" > "$R/local/local.d/options.inc"
printf 'extended_spam_headers = true;\nskip_local = false;\n' > "$R/local/local.d/milter_headers.conf"
start rspamd rspamd -f -c /etc/rspamd/rspamd.conf -u _rspamd -g _rspamd --var=LOCAL_CONFDIR="$R/local" \
  --var=DBDIR="$R/db" --var=RUNDIR="$R/run" --var=LOGDIR="$R/log"
# The first start compiles rspamd's hyperscan cache: minutes.
wait_port "$RP" 6000 || { echo "bench/checks: rspamd did not start"; tail "$T/rspamd.log"; exit 1; }

postfix_instance() { # NAME PORT MAIN_CF_LINES, as bench/smtpd.sh
  local d=$T/$1
  mkdir -p "$d/etc" "$d/queue" "$d/data"
  chown postfix "$d/data"
  cat > "$d/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
maillog_file_prefixes = /tmp, /var
maillog_file = $d/postfix.log
$3
CONF
  sed -e "s/^smtp      inet/127.0.0.1:$2 inet/" /etc/postfix/master.cf > "$d/etc/master.cf"
  grep -q "^127.0.0.1:$2" "$d/etc/master.cf" || echo "127.0.0.1:$2 inet n - n - - smtpd" >> "$d/etc/master.cf"
  grep -q '^postlog' "$d/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >> "$d/etc/master.cf"
  postconf -c "$d/etc" -F '*/*/chroot = n' >/dev/null 2>&1
  postfix -c "$d/etc" start >"$d/start.log" 2>&1 || { echo "bench/checks: postfix did not start"; cat "$d/start.log"; exit 1; }
  INSTANCES+=("$d")
  wait_port "$2" || { echo "bench/checks: postfix did not listen"; exit 1; }
}
source_() { # PORT → msg/s
  local t0 t1
  t0=$(now)
  smtp-source -s "$SESS" -m "$RSPAMD_MSGS" -l 10240 -f sender@remote.test -t bench@example.test -M client.test 127.0.0.1:"$1" >"$T/source.log" 2>&1 \
    || { echo "smtp-source failed: $(tail -3 "$T/source.log")" >&2; echo 0; return; }
  t1=$(now)
  python3 -c "print('%.0f' % ($RSPAMD_MSGS / ($t1 - $t0)))"
}
P3=$(free_port); letterbox rspamd-lb "$P3" "$OFF
milter = [\"inet:127.0.0.1:$RP\"]
milter-timeout = \"120s\""
P4=$(free_port); postfix_instance pf "$P4" "mydestination = example.test
local_recipient_maps =
smtpd_client_restrictions = check_client_access static:HOLD
smtpd_milters = inet:127.0.0.1:$RP
milter_default_action = tempfail
milter_protocol = 6"
echo
echo "with rspamd as a milter: $RSPAMD_MSGS messages of 10 KB, $SESS sessions (smtp-source), new connection per message"
printf '%-34s %12s %12s %8s\n' "case" "letterbox" "postfix-3.7" "ratio"
source_ "$P3" >/dev/null; source_ "$P4" >/dev/null   # warm-up: rspamd's maps and caches
lbs=(); pfs=()
for _ in 1 2 3; do lbs+=("$(source_ "$P3")"); pfs+=("$(source_ "$P4")"); done
lb=$(median "${lbs[@]}"); pf=$(median "${pfs[@]}")
printf '%-34s %10s/s %10s/s %7sx\n' "smtpd + rspamd milter" "$lb" "$pf" "$(ratio "$lb" "$pf")"
echo "(rounds: letterbox ${lbs[*]}; postfix ${pfs[*]})"
n=$(grep -l '^X-Rspamd-Queue-Id:' "$T"/rspamd-lb/spool/data/* 2>/dev/null | wc -l)  # warm-up included
echo "(letterbox: $n messages carry rspamd's headers; postfix held $(find "$T/pf/queue/hold" -type f | wc -l))"
