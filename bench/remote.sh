#!/usr/bin/env bash
# make bench: remote delivery rate, letterbox beside Postfix 3.7 in the same
# run. Both deliver the same queue — 2,000 messages of 10 KB to one remote
# domain — to the same sink, Postfix's smtp-sink on 127.0.0.2 (a high
# port), through a smarthost route ([127.0.0.2]:PORT for both, so no DNS).
#  - letterbox: the messages are put in the spool first, then one timed
#    `queue-runner flush` delivers them all (locks, envelope updates, spool
#    removal included).
#  - Postfix: the messages are injected with smtp-source into a private
#    instance that holds them; the timed part is from `postsuper -H ALL` +
#    `postqueue -f` until the queue is empty (qmgr + smtp(8) with its
#    connection cache, default concurrency).
# A third row is pkg/remote alone (bench/remote's direct driver, 20
# deliveries at once) with the same sink. Needs root for Postfix.
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_REMOTE_MSGS:-2000}
SIZE=${BENCH_REMOTE_SIZE:-10240}
for c in smtp-sink smtp-source postfix postsuper postqueue; do
  command -v $c >/dev/null || PATH=$PATH:/usr/sbin
  command -v $c >/dev/null || { echo "bench/remote: $c not installed (apt-get install postfix)"; exit 1; }
done
[ -x bin/queue-runner ] || make -s bin >/dev/null || { echo "bench/remote: make bin failed"; exit 1; }
T=$(mktemp -d /tmp/letterbox-bench-remote.XXXXXX)
chmod 755 "$T"
go build -o "$T/remote-bench" ./bench/remote || { echo "bench/remote: cannot build the helper"; exit 1; }
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/$1/$2) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; n,a,b=map(float,sys.argv[1:]); print('%.0f' % (n/(b-a)))" "$MSGS" "$1" "$2"; }

SINK_PORT=$(free_port 127.0.0.2)
smtp-sink -u nobody 127.0.0.2:"$SINK_PORT" 256 2>"$T/sink.log" &
SINK_PID=$!
PF=$T/postfix
cleanup() {
  kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null
  [ -d "$PF/etc" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1
  sleep 0.5; if [ -n "${BENCH_REMOTE_KEEP:-}" ]; then echo "(kept $T)"; else rm -rf "$T"; fi
}
trap cleanup EXIT
wait_port 127.0.0.2 "$SINK_PORT" || { echo "bench/remote: smtp-sink did not start"; cat "$T/sink.log"; exit 1; }

# --- letterbox: spool → queue-runner → sink ---
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
export LETTERBOX_CONFIG=$T/letterbox.conf
"$T/remote-bench" fill -spool "$T/spool" -n "$MSGS" -size "$SIZE" -to sink@remote.test || exit 1
t0=$(now)
bin/queue-runner --route "*=127.0.0.2:$SINK_PORT" flush 2>"$T/queue-runner.log"
t1=$(now)
lb=$(rate "$t0" "$t1")
lb_left=$(find "$T/spool/env" -type f 2>/dev/null | wc -l)
[ "$lb_left" = 0 ] || { echo "bench/remote: letterbox left $lb_left messages queued:"; tail -3 "$T/queue-runner.log"; lb="$lb(!)"; }

# --- pkg/remote alone ---
direct=$("$T/remote-bench" direct -route "127.0.0.2:$SINK_PORT" -n "$MSGS" -size "$SIZE" -c 20) || direct=0

# --- a private Postfix instance: hold queue → smtp(8) → sink ---
PF_PORT=$(free_port 127.0.0.1)
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cat > "$PF/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.2]:$SINK_PORT
smtp_tls_security_level = none
smtpd_client_restrictions = check_client_access static:HOLD
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
maillog_file_prefixes = /tmp, /var
maillog_file = $T/postfix.log
CONF
sed -e "s/^smtp      inet.*/127.0.0.1:$PF_PORT inet n - n - - smtpd/" -e 's/^#*\(postlog .*\)/\1/' /etc/postfix/master.cf > "$PF/etc/master.cf"
grep -q '^postlog' "$PF/etc/master.cf" || echo "postlog unix-dgram n - n - 1 postlogd" >> "$PF/etc/master.cf"
postconf -c "$PF/etc" -F '*/*/chroot = n' >/dev/null 2>&1
postfix -c "$PF/etc" check >/dev/null 2>&1
postfix -c "$PF/etc" start >"$T/postfix-start.log" 2>&1 || { echo "bench/remote: postfix did not start"; cat "$T/postfix-start.log"; exit 1; }
wait_port 127.0.0.1 "$PF_PORT" || { echo "bench/remote: postfix did not listen"; exit 1; }
smtp-source -s 10 -m "$MSGS" -l "$SIZE" -f bench@example.test -t sink@remote.test -M client.test 127.0.0.1:"$PF_PORT" >"$T/source.log" 2>&1 \
  || { echo "bench/remote: smtp-source failed: $(tail -3 "$T/source.log")"; exit 1; }
held() { find "$PF/queue/hold" -type f 2>/dev/null | wc -l; }
queued() { find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" "$PF/queue/hold" "$PF/queue/maildrop" -type f 2>/dev/null | wc -l; }
for _ in $(seq 600); do [ "$(held)" -ge "$MSGS" ] && break; sleep 0.05; done
[ "$(held)" -ge "$MSGS" ] || { echo "bench/remote: only $(held) of $MSGS messages held by Postfix"; exit 1; }
t0=$(now)
postsuper -c "$PF/etc" -H ALL >/dev/null 2>&1
postqueue -c "$PF/etc" -f
while [ "$(queued)" -gt 0 ]; do sleep 0.02; done
t1=$(now)
pf=$(rate "$t0" "$t1")
sent=$(grep -c 'status=sent' "$T/postfix.log")

ratio=$(python3 -c "import sys; a,b=sys.argv[1:]; print('%.2f' % (float(a.rstrip('(!)'))/float(b)) if float(b) else 'n/a')" "$lb" "$pf")
dratio=$(python3 -c "import sys; a,b=sys.argv[1:]; print('%.2f' % (float(a)/float(b)) if float(b) else 'n/a')" "$direct" "$pf")
echo "remote delivery: $MSGS messages of $SIZE bytes to one domain, smtp-sink on loopback, no TLS"
printf '%-40s %12s %8s\n' "case" "msg/s" "ratio"
printf '%-40s %10s/s %7sx\n' "letterbox queue-runner flush" "$lb" "$ratio"
printf '%-40s %10s/s %7s\n' "postfix-3.7 qmgr+smtp (released hold)" "$pf" "1.00x"
printf '%-40s %10s/s %7sx\n' "letterbox pkg/remote alone (20 at once)" "$direct" "$dratio"
echo "(postfix status=sent: $sent; letterbox left queued: $lb_left)"
