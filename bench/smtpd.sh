#!/usr/bin/env bash
# make bench: smtpd's acceptance rate beside Postfix 3.7's on loopback, both
# driven by Postfix's own smtp-source in the same run: 2,000 messages of
# 10 KB over 10 concurrent sessions, once with a new connection per message
# and once with reused connections. Both servers commit durably (our spool
# fsyncs before the 250; Postfix's cleanup fsyncs the queue file). Postfix
# puts the mail on hold so neither side spends the run delivering.
# Prints a table with msg/s and our ratio. Needs root for Postfix.
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_SMTPD_MSGS:-2000}
SESS=${BENCH_SMTPD_SESSIONS:-10}
SIZE=${BENCH_SMTPD_SIZE:-10240}
[ -x bin/smtpd ] || make -s bin >/dev/null
for c in smtp-source postfix; do
  command -v $c >/dev/null || PATH=$PATH:/usr/sbin
  command -v $c >/dev/null || { echo "bench/smtpd: $c not installed (apt-get install postfix)"; exit 1; }
done
T=$(mktemp -d /tmp/letterbox-bench-smtpd.XXXXXX)
chmod 755 "$T"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# --- letterbox smtpd ---
LB_PORT=$(free_port)
cat > "$T/letterbox.conf" <<CONF
hostname = "mx.example.test"
domains = ["example.test"]
spool = "$T/spool"
mail-root = "$T/mail"
users = "$T/users"
aliases = "$T/aliases"
log-level = "warn"
CONF
echo "bench@example.test:{PLAIN}x::::::" > "$T/users"
echo "postmaster: bench@example.test" > "$T/aliases"
LETTERBOX_CONFIG=$T/letterbox.conf bin/smtpd --listen 127.0.0.1:$LB_PORT 2>"$T/smtpd.log" &
LB_PID=$!

# --- a private Postfix instance ---
PF_PORT=$(free_port)
PF=$T/postfix
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydestination = example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
smtpd_client_restrictions = check_client_access static:HOLD
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_peername_lookup = yes
maillog_file_prefixes = /tmp, /var
maillog_file = $T/postfix.log
CONF
sed -e "s/^smtp      inet/127.0.0.1:$PF_PORT inet/" -e 's/^#*\(postlog .*\)/\1/' /etc/postfix/master.cf > "$PF/etc/master.cf"
grep -q "^127.0.0.1:$PF_PORT" "$PF/etc/master.cf" || echo "127.0.0.1:$PF_PORT inet n - y - - smtpd" >> "$PF/etc/master.cf"
grep -q '^postlog' "$PF/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >> "$PF/etc/master.cf"
# No chroot: the private instance has no copies of /etc files in its queue.
postconf -c "$PF/etc" -F '*/*/chroot = n' >/dev/null 2>&1
postfix -c "$PF/etc" check >/dev/null 2>&1
if ! postfix -c "$PF/etc" start >"$T/postfix-start.log" 2>&1; then
  echo "bench/smtpd: postfix did not start:"; cat "$T/postfix-start.log"
fi
cleanup() {
  kill "$LB_PID" 2>/dev/null; wait "$LB_PID" 2>/dev/null
  postfix -c "$PF/etc" stop >/dev/null 2>&1
  sleep 0.5; rm -rf "$T"
}
trap cleanup EXIT
wait_port "$LB_PORT" || { echo "bench/smtpd: smtpd did not start"; cat "$T/smtpd.log"; exit 1; }
wait_port "$PF_PORT" || { echo "bench/smtpd: postfix did not listen"; cat "$T/postfix-start.log"; exit 1; }

# run PORT ARGS… → messages per second (smtp-source exits when all are sent)
run() {
  local port=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  smtp-source -s "$SESS" -m "$MSGS" -l "$SIZE" -f sender@remote.test -t bench@example.test \
    -M client.test "$@" 127.0.0.1:"$port" >"$T/source.log" 2>&1 || { echo "smtp-source failed: $(tail -3 "$T/source.log")" >&2; echo 0; return; }
  t1=$(date +%s.%N)
  python3 -c "print('%.0f' % ($MSGS / ($t1 - $t0)))"
}
count_lb() { find "$T/spool" -type f 2>/dev/null | wc -l; }
count_pf() { find "$PF/queue/hold" -type f 2>/dev/null | wc -l; }

printf '%s\n' "smtpd acceptance: $MSGS messages of $SIZE bytes, $SESS concurrent sessions, loopback, durable"
printf '%-28s %12s %12s %8s\n' "case" "letterbox" "postfix-3.7" "ratio"
for mode in new reuse; do
  args=()
  [ "$mode" = reuse ] && args=(-d)
  lb=$(run "$LB_PORT" "${args[@]}")
  pf=$(run "$PF_PORT" "${args[@]}")
  ratio=$(python3 -c "print('%.2f' % ($lb / $pf if $pf else 0))")
  label="new connection per message"
  [ "$mode" = reuse ] && label="reused connections"
  printf '%-28s %9s/s %9s/s %7sx\n' "$label" "$lb" "$pf" "$ratio"
done
echo "(queued: letterbox spool files $(count_lb), postfix hold queue $(count_pf))"
