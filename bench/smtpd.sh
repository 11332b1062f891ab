#!/usr/bin/env bash
# make bench: smtpd beside Postfix 3.7 on loopback, both driven by Postfix's
# own smtp-source, both delivering into a Maildir while they accept (as a
# server does all day): smtpd + queue-runner --daemon against Postfix's
# smtpd + cleanup + qmgr + virtual(8). Each run sends MSGS messages of SIZE
# octets over SESS concurrent sessions, with a new connection per message
# and with reused connections, and times
#   accept         until the client has its last 250 (durable on both
#                  sides: our spool's commit, Postfix's fsync in cleanup),
#   SMTP->Maildir  until the last message is in the Maildir.
# Twice: with the spools and Maildirs on the machine's disk (BENCH_DISK_DIR,
# default /var/tmp) and on a tmpfs mounted for the run, where a durable
# commit costs nothing and only CPU counts. Letterbox and Postfix runs
# alternate, RUNS times (medians, and each run's ratio, are printed), so
# the noise of a shared machine hits both alike: compare the ratios, not
# the absolute numbers. Beside the rates: each side's CPU per message (all
# its processes, until the last delivery) and the client's CPU as a share
# of its run (near 100% means the client was the limit), and the machine's
# busy and iowait shares.
#
# Environment: BENCH_SMTPD_MSGS (2000), BENCH_SMTPD_SESSIONS (10),
# BENCH_SMTPD_SIZE (10240), BENCH_SMTPD_RUNS (3), BENCH_SMTPD_CONDITIONS
# ("disk tmpfs"), BENCH_DISK_DIR (/var/tmp), BENCH_SMTPD_BIN (bin: where
# smtpd and queue-runner are taken from).
# BENCH_SMTPD_PROFILE=DIR: build smtpd and queue-runner with -tags
# benchprof and, for the first run of each case, save their pprof CPU
# profiles and allocation profiles (of exactly that run: pkg/benchprof),
# then strace -c -f each
# side's processes through one more run per case (system calls per
# message, beside Postfix's; 1,000 messages, as strace slows every call),
# with summaries in DIR/summary.txt.
# Needs root (Postfix's master, mounting the tmpfs).
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_SMTPD_MSGS:-2000}
SESS=${BENCH_SMTPD_SESSIONS:-10}
SIZE=${BENCH_SMTPD_SIZE:-10240}
RUNS=${BENCH_SMTPD_RUNS:-3}
CONDITIONS=${BENCH_SMTPD_CONDITIONS:-disk tmpfs}
DISK=${BENCH_DISK_DIR:-/var/tmp}
BIN=${BENCH_SMTPD_BIN:-bin}
PROF=${BENCH_SMTPD_PROFILE:-}
STRACE_MSGS=1000
PATH=$PATH:/usr/sbin
for c in smtp-source postfix postconf; do
  command -v $c >/dev/null || { echo "bench/smtpd: $c not installed (apt-get install postfix)"; exit 1; }
done
T=$(mktemp -d /tmp/letterbox-bench-smtpd.XXXXXX)
chmod 755 "$T"
PIDS=()
INSTANCES=()
MOUNTS=()
DIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for i in "${INSTANCES[@]}"; do postfix -c "$i/etc" stop >/dev/null 2>&1; done
  sleep 0.5
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null; done
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
  rm -rf "$T"
}
trap cleanup EXIT
go build -o "$T/measure" ./bench/smtpd || { echo "bench/smtpd: cannot build bench/smtpd"; exit 1; }
if [ -n "$PROF" ]; then
  command -v strace >/dev/null || { echo "bench/smtpd: strace needed for BENCH_SMTPD_PROFILE"; exit 1; }
  mkdir -p "$PROF" && PROF=$(cd "$PROF" && pwd) || exit 1
  BIN=$T/bin
  go build -tags benchprof,urfave_cli_no_docs -o "$BIN/" ./cmd/smtpd ./cmd/queue-runner || { echo "bench/smtpd: cannot build with -tags benchprof"; exit 1; }
else
  [ -x "$BIN/smtpd" ] && [ -x "$BIN/queue-runner" ] || make -s bin >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# letterbox DIR PORT: smtpd on PORT and queue-runner --daemon, with their
# spool and mail root under DIR; sets LB_PIDS.
letterbox() {
  local d=$1
  mkdir -p "$d"
  cat > "$d/letterbox.conf" <<CONF
hostname = "mx.example.test"
domains = ["example.test"]
spool = "$d/spool"
mail-root = "$d/mail"
users = "$d/users"
aliases = "$d/aliases"
log-level = "warn"
CONF
  echo "bench@example.test:{PLAIN}x::::::" > "$d/users"
  echo "postmaster: bench@example.test" > "$d/aliases"
  LETTERBOX_CONFIG=$d/letterbox.conf LETTERBOX_PROFILE_DIR=${PROF:+$PROF/$cond-smtpd} "$BIN/smtpd" --listen 127.0.0.1:$2 2>"$d/smtpd.log" &
  local s=$!
  PIDS+=($s)
  wait_port "$2" || { echo "bench/smtpd: smtpd did not start"; cat "$d/smtpd.log"; exit 1; }
  LETTERBOX_CONFIG=$d/letterbox.conf LETTERBOX_PROFILE_DIR=${PROF:+$PROF/$cond-queue-runner} "$BIN/queue-runner" --daemon 2>"$d/queue-runner.log" &
  PIDS+=($!)
  LB_PIDS="$s,$!"
}

# postfix_instance DIR PORT: a private Postfix from a temp config dir,
# listening on 127.0.0.1:PORT, no chroot, delivering example.test into the
# Maildir DIR/mail/bench/ with virtual(8); sets PF_PIDS (its master).
postfix_instance() {
  local d=$1
  mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
  chown postfix "$d/data"
  chown nobody:nogroup "$d/mail"
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
mydestination = localhost
virtual_mailbox_domains = example.test
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
virtual_destination_concurrency_limit = 20
CONF
  sed -e "s/^smtp      inet/127.0.0.1:$2 inet/" /etc/postfix/master.cf > "$d/etc/master.cf"
  grep -q "^127.0.0.1:$2" "$d/etc/master.cf" || echo "127.0.0.1:$2 inet n - n - - smtpd" >> "$d/etc/master.cf"
  grep -q '^postlog' "$d/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >> "$d/etc/master.cf"
  postconf -c "$d/etc" -F '*/*/chroot = n' >/dev/null 2>&1
  if ! postfix -c "$d/etc" start >"$d/start.log" 2>&1; then
    echo "bench/smtpd: postfix did not start:"; cat "$d/start.log"; exit 1
  fi
  INSTANCES+=("$d")
  wait_port "$2" || { echo "bench/smtpd: postfix did not listen"; exit 1; }
  PF_PIDS=$(head -1 "$d/queue/pid/master.pid" | tr -d ' ')
}

# one LABEL PORT MAILDIR PIDS [-d]: a run; its result line goes to
# ${OUT:-results}.
one() {
  local label=$1 port=$2 maildir=$3 pids=$4; shift 4
  # Each run starts from an empty Maildir and clean page cache, so no run
  # pays for the one before.
  rm -rf "$maildir"
  sync
  "$T/measure" run "$label" "$port" "$maildir" "$pids" -- \
    smtp-source -s "$SESS" -m "${N:-$MSGS}" -l "$SIZE" -f sender@remote.test -t bench@example.test \
    -M client.test "$@" 127.0.0.1:"$port" >> "$T/${OUT:-results}" || echo "bench/smtpd: run $label failed" >&2
}

# profiled NAME ARGS…: one … with the letterbox processes profiled for
# exactly the run (pkg/benchprof: SIGUSR1 before and after, sent by
# measure); the profiles become NAME-smtpd.cpu, NAME-smtpd.allocs and
# NAME-smtpd.allocs.before (the same for queue-runner).
profiled() {
  local name=$1 p; shift
  PROF_N=$((PROF_N + 1))
  PROFILE_PIDS=$LB_PIDS one "$@"
  for p in smtpd queue-runner; do
    mv "$PROF/$cond-$p/cpu.$PROF_N" "$PROF/$name-$p.cpu"
    mv "$PROF/$cond-$p/allocs.$PROF_N.start" "$PROF/$name-$p.allocs.before"
    mv "$PROF/$cond-$p/allocs.$PROF_N.end" "$PROF/$name-$p.allocs"
  done
}

# straced NAME PIDS ARGS…: one … under strace -c -f, one strace for
# each process of PIDS (a comma list) with its descendants, new ones
# included: NAME-COMMAND.strace for each.
straced() {
  local name=$1 roots=$2 st=() root pids; shift 2
  for root in ${roots//,/ }; do
    pids=$(ps -e -o pid=,ppid= | awk -v r="$root" '{ p[$1] = $2 } END { in_[r] = 1
      do { c = 0; for (x in p) if (!(x in in_) && (p[x] in in_)) { in_[x] = 1; c = 1 } } while (c); for (x in in_) printf "-p %s ", x }')
    # shellcheck disable=SC2086
    strace -c -f -o "$PROF/$name-$(cat /proc/$root/comm).strace" $pids 2>/dev/null &
    st+=($!)
  done
  sleep 1 # strace attaches to every thread first
  N=$STRACE_MSGS OUT=strace-results one "$@"
  kill -INT "${st[@]}"; wait "${st[@]}"
}

: > "$T/results"
for cond in $CONDITIONS; do
  case $cond in
    disk)
      base=$(mktemp -d "$DISK/letterbox-bench-smtpd.XXXXXX") || exit 1
      DIRS+=("$base")
      where="$base ($(df --output=fstype,source "$base" | tail -1 | xargs))" ;;
    tmpfs)
      base=$T/tmpfs; mkdir -p "$base"
      mount -t tmpfs -o size=4g,mode=755 tmpfs "$base" || { echo "bench/smtpd: cannot mount a tmpfs (root needed)"; exit 1; }
      MOUNTS+=("$base")
      where="$base (tmpfs)" ;;
    *) echo "bench/smtpd: unknown condition $cond"; exit 1 ;;
  esac
  chmod 755 "$base"
  echo "$cond: $where"
  if [ -n "$PROF" ]; then PROF_N=0; mkdir -p "$PROF/$cond-smtpd" "$PROF/$cond-queue-runner"; fi
  LB=$(free_port); letterbox "$base/lb" "$LB"
  PF=$(free_port); postfix_instance "$base/pf" "$PF"
  for run in $(seq "$RUNS"); do
    for mode in new reused; do
      args=(); [ $mode = reused ] && args=(-d)
      lb=(one); [ -n "$PROF" ] && [ "$run" = 1 ] && lb=(profiled "$cond-$mode")
      "${lb[@]}" "$cond/letterbox/$mode connections/$run" "$LB" "$base/lb/mail/example.test/bench" "$LB_PIDS" "${args[@]}"
      one "$cond/postfix/$mode connections/$run" "$PF" "$base/pf/mail/bench" "$PF_PIDS" "${args[@]}"
    done
  done
  if [ -n "$PROF" ]; then
    for mode in new reused; do
      args=(); [ $mode = reused ] && args=(-d)
      straced "$cond-$mode" "$LB_PIDS" "strace" "$LB" "$base/lb/mail/example.test/bench" "$LB_PIDS" "${args[@]}"
      straced "$cond-$mode-postfix" "$PF_PIDS" "strace" "$PF" "$base/pf/mail/bench" "$PF_PIDS" "${args[@]}"
    done
  fi
done
echo
echo "smtpd + queue-runner beside Postfix 3.7 (smtpd, cleanup, qmgr, virtual): $MSGS messages of $SIZE octets, $SESS sessions, loopback, $RUNS runs; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
"$T/measure" report "$T/results"
[ -n "${BENCH_SMTPD_KEEP:-}" ] && cp "$T/results" "$BENCH_SMTPD_KEEP"
if [ -n "$PROF" ]; then
  cp "$T/results" "$PROF/results.jsonl"
  {
    for f in "$PROF"/*.strace; do
      n=$(basename "$f" .strace)
      echo "== $n: system calls per message (strace -c -f, $STRACE_MSGS messages; top 15)"
      awk -v m="$STRACE_MSGS" '$1 ~ /^[0-9.]+$/ && NF >= 5 { printf "%-20s %8.2f\n", $NF, $4 / m }' "$f" | sort -k2 -nr | head -16
    done
    for f in "$PROF"/*.cpu; do
      echo "== $(basename "$f"): CPU, top 25 by cumulative"
      go tool pprof -top -cum -nodecount=25 "$f" 2>/dev/null | sed -n '/flat%/,$p'
    done
    for f in "$PROF"/*.allocs; do
      echo "== $(basename "$f"): bytes allocated during the run, top 15"
      go tool pprof -top -sample_index=alloc_space -nodecount=15 -base "$f.before" "$f" 2>/dev/null | sed -n '/flat%/,$p'
      echo "== $(basename "$f"): objects allocated during the run, top 15"
      go tool pprof -top -sample_index=alloc_objects -nodecount=15 -base "$f.before" "$f" 2>/dev/null | sed -n '/flat%/,$p'
    done
  } > "$PROF/summary.txt"
  echo "profiles in $PROF; summary in $PROF/summary.txt"
fi
exit 0
