#!/usr/bin/env bash
# make bench: smtpd beside Postfix 3.7 on loopback, both driven by Postfix's
# own smtp-source in the same run.
#  1. acceptance rate: 2,000 messages of 10 KB over 10 concurrent sessions,
#     with a new connection per message and with reused connections. Both
#     commit durably before the 250 (our spool fsyncs; Postfix's cleanup
#     fsyncs the queue file); Postfix puts the mail on hold so neither side
#     spends the run delivering.
#  2. end to end: the same messages from SMTP into a Maildir: smtpd +
#     queue-runner --daemon, Postfix + virtual(8) with a Maildir map.
# Prints tables with msg/s and our ratio. Needs root (Postfix's master).
# The machine may be shared: compare the ratio, not the absolute numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_SMTPD_MSGS:-2000}
SESS=${BENCH_SMTPD_SESSIONS:-10}
SIZE=${BENCH_SMTPD_SIZE:-10240}
[ -x bin/smtpd ] && [ -x bin/queue-runner ] || make -s bin >/dev/null
PATH=$PATH:/usr/sbin
for c in smtp-source postfix postconf; do
  command -v $c >/dev/null || { echo "bench/smtpd: $c not installed (apt-get install postfix)"; exit 1; }
done
T=$(mktemp -d /tmp/letterbox-bench-smtpd.XXXXXX)
chmod 755 "$T"
PIDS=()
INSTANCES=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for i in "${INSTANCES[@]}"; do postfix -c "$i/etc" stop >/dev/null 2>&1; done
  sleep 0.5; rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
rate() { python3 -c "print('%.0f' % ($MSGS / ($2 - $1)))"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2 if $2 else 0))"; }

# letterbox NAME PORT: smtpd on PORT with its own spool and mail root.
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
CONF
  echo "bench@example.test:{PLAIN}x::::::" > "$d/users"
  echo "postmaster: bench@example.test" > "$d/aliases"
  LETTERBOX_CONFIG=$d/letterbox.conf bin/smtpd --listen 127.0.0.1:$2 2>"$d/smtpd.log" &
  PIDS+=($!)
  wait_port "$2" || { echo "bench/smtpd: smtpd did not start"; cat "$d/smtpd.log"; exit 1; }
}

# postfix_instance NAME PORT MAIN_CF_LINES: a private Postfix from a temp
# config dir, listening on 127.0.0.1:PORT, no chroot.
postfix_instance() {
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
  if ! postfix -c "$d/etc" start >"$d/start.log" 2>&1; then
    echo "bench/smtpd: postfix did not start:"; cat "$d/start.log"; exit 1
  fi
  INSTANCES+=("$d")
  wait_port "$2" || { echo "bench/smtpd: postfix did not listen"; exit 1; }
}

# source PORT ARGS…: send the messages; prints nothing, fails loudly.
source_() {
  local port=$1; shift
  smtp-source -s "$SESS" -m "$MSGS" -l "$SIZE" -f sender@remote.test -t bench@example.test \
    -M client.test "$@" 127.0.0.1:"$port" >"$T/source.log" 2>&1 || { echo "smtp-source failed: $(tail -3 "$T/source.log")" >&2; return 1; }
}
# accept PORT ARGS… → msg/s
accept() { local t0 t1; t0=$(now); source_ "$@" || { echo 0; return; }; t1=$(now); rate "$t0" "$t1"; }
# count DIR: files under DIR
count() { find "$1" -type f 2>/dev/null | wc -l; }
# e2e PORT MAILDIR → msg/s until MSGS files are in MAILDIR/new
e2e() {
  local t0 t1
  t0=$(now)
  source_ "$1" || { echo 0; return; }
  for _ in $(seq 1200); do [ "$(count "$2/new")" -ge "$MSGS" ] && break; sleep 0.1; done
  t1=$(now)
  [ "$(count "$2/new")" -ge "$MSGS" ] || { echo "bench/smtpd: only $(count "$2/new") of $MSGS delivered into $2" >&2; echo 0; return; }
  rate "$t0" "$t1"
}

LB=$(free_port); letterbox lb "$LB"
PF=$(free_port); postfix_instance pf "$PF" "mydestination = example.test
local_recipient_maps =
smtpd_client_restrictions = check_client_access static:HOLD"

echo "smtpd acceptance: $MSGS messages of $SIZE bytes, $SESS concurrent sessions, loopback, durable"
printf '%-28s %12s %12s %8s\n' "case" "letterbox" "postfix-3.7" "ratio"
for mode in new reuse; do
  args=(); label="new connection per message"
  [ "$mode" = reuse ] && { args=(-d); label="reused connections"; }
  lb=$(accept "$LB" "${args[@]}")
  pf=$(accept "$PF" "${args[@]}")
  printf '%-28s %10s/s %10s/s %7sx\n' "$label" "$lb" "$pf" "$(ratio "$lb" "$pf")"
done
echo "(queued: letterbox $(count "$T/lb/spool/env") envelopes, postfix $(count "$T/pf/queue/hold") held)"

# End to end into a Maildir.
LB2=$(free_port); letterbox lb2 "$LB2"
LETTERBOX_CONFIG=$T/lb2/letterbox.conf bin/queue-runner --daemon 2>"$T/lb2/queue-runner.log" &
PIDS+=($!)
mkdir -p "$T/pfmail" && chown nobody:nogroup "$T/pfmail"
PF2=$(free_port); postfix_instance pf2 "$PF2" "mydestination = localhost
virtual_mailbox_domains = example.test
virtual_mailbox_base = $T/pfmail
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(id -g nobody)
virtual_destination_concurrency_limit = 20"
echo
echo "end to end, SMTP to Maildir: $MSGS messages of $SIZE bytes, $SESS sessions, new connection per message"
printf '%-28s %12s %12s %8s\n' "case" "letterbox" "postfix-3.7" "ratio"
lb=$(e2e "$LB2" "$T/lb2/mail/example.test/bench")
pf=$(e2e "$PF2" "$T/pfmail/bench")
printf '%-28s %10s/s %10s/s %7sx\n' "smtpd+queue-runner / virtual" "$lb" "$pf" "$(ratio "$lb" "$pf")"
