#!/usr/bin/env bash
# make bench: several hosts behind HAProxy (letterbox-cluster(7)), in one
# run on loopback: HAProxy (the Debian package, PROXY v2 to +proxy
# listeners) in front of two letterbox hosts (127.0.0.2, 127.0.0.3, each
# smtpd and imapd with its own spool and mail root) against the same
# HAProxy in front of one of them, and that host reached directly (plain
# listeners, no proxy) for the cost of the proxy itself; IMAP also
# straight to mx1's +proxy listener with the driver sending the PROXY v2
# header (our side of the protocol without HAProxy's hop).
#  smtp  acceptance: Postfix's smtp-source, BENCH_PROXY_MSGS (2,000)
#        messages of 10 KB over BENCH_PROXY_SESSIONS (10) concurrent
#        sessions, a connection per message; each committed (fsync) before
#        its 250.
#  imap  sessions: bench/proxy, BENCH_PROXY_IMAP (1,000) sessions over the
#        same concurrency, each LOGIN, SELECT INBOX (100 messages), UID
#        FETCH 1:* (FLAGS), LOGOUT.
# Ratios: two hosts / one host, through HAProxy. All of it shares this
# machine's cores and disk, so two hosts gain only what one host leaves
# idle: the numbers say what the proxy and the split cost here, not what
# two machines would give.
set -uo pipefail
cd "$(dirname "$0")/.."
MSGS=${BENCH_PROXY_MSGS:-2000}
SESS=${BENCH_PROXY_SESSIONS:-10}
IMAPN=${BENCH_PROXY_IMAP:-1000}
PATH=$PATH:/usr/sbin
for c in haproxy smtp-source python3; do
  command -v $c >/dev/null || { echo "bench/proxy: $c not installed (apt-get install haproxy postfix)"; exit 1; }
done
[ -x bin/smtpd ] && [ -x bin/imapd ] || make -s bin >/dev/null
T=$(mktemp -d /tmp/letterbox-bench-proxy.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
go build -o "$T/driver" ./bench/proxy || exit 1
go build -o "$T/gen" ./bench/pop3 || exit 1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/$1/$2) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }

SMTP_PORT=$(free_port); IMAP_PORT=$(free_port); SMTP_DIRECT=$(free_port); IMAP_DIRECT=$(free_port)
"$T/gen" gen "$T/box" 100 500 20000 >/dev/null

# host NAME IP: smtpd and imapd on +proxy listeners of IP (and plain ones
# for the direct runs), HAProxy's 127.0.0.1 in proxy-networks.
host() {
  local d=$T/$1 ip=$2
  mkdir -p "$d"
  cp -r "$T/box" "$d/box"
  cat > "$d/letterbox.conf" <<CONF
hostname = "$1.example.test"
domains = ["example.test"]
spool = "$d/spool"
mail-root = "$d/mail"
users = "$d/users"
aliases = "$d/aliases"
log-level = "warn"
proxy-networks = ["127.0.0.1"]
auth-failure-delay = "1ms"
CONF
  echo "bench@example.test:{PLAIN}benchpw::::::mail=maildir:$d/box" > "$d/users"
  echo "postmaster: bench@example.test" > "$d/aliases"
  LETTERBOX_CONFIG=$d/letterbox.conf bin/smtpd --listen "smtp+proxy=$ip:$SMTP_PORT" --listen "$ip:$SMTP_DIRECT" 2>"$d/smtpd.log" &
  PIDS+=($!)
  LETTERBOX_CONFIG=$d/letterbox.conf bin/imapd --listen "imap+proxy=$ip:$IMAP_PORT" --listen "$ip:$IMAP_DIRECT" 2>"$d/imapd.log" &
  PIDS+=($!)
  wait_port "$ip" "$SMTP_DIRECT" && wait_port "$ip" "$IMAP_DIRECT" || { echo "bench/proxy: $1 did not start"; cat "$d"/*.log; exit 1; }
}
host mx1 127.0.0.2
host mx2 127.0.0.3

# One HAProxy, two frontends per protocol: to both hosts, to mx1 alone.
S2=$(free_port); S1=$(free_port); I2=$(free_port); I1=$(free_port)
cat > "$T/haproxy.cfg" <<CONF
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend smtp2
    bind 127.0.0.1:$S2
    default_backend smtp2
backend smtp2
    balance roundrobin
    server mx1 127.0.0.2:$SMTP_PORT send-proxy-v2
    server mx2 127.0.0.3:$SMTP_PORT send-proxy-v2
frontend smtp1
    bind 127.0.0.1:$S1
    default_backend smtp1
backend smtp1
    server mx1 127.0.0.2:$SMTP_PORT send-proxy-v2
frontend imap2
    bind 127.0.0.1:$I2
    default_backend imap2
backend imap2
    balance leastconn
    server mx1 127.0.0.2:$IMAP_PORT send-proxy-v2
    server mx2 127.0.0.3:$IMAP_PORT send-proxy-v2
frontend imap1
    bind 127.0.0.1:$I1
    default_backend imap1
backend imap1
    server mx1 127.0.0.2:$IMAP_PORT send-proxy-v2
CONF
haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
PIDS+=($!)
wait_port 127.0.0.1 "$S2" || { echo "bench/proxy: haproxy did not start"; cat "$T/haproxy.log"; exit 1; }

# smtp ADDR → messages per second
smtp() {
  local t0 t1
  t0=$(now)
  smtp-source -s "$SESS" -m "$MSGS" -l 10240 -f sender@remote.test -t bench@example.test \
    -M client.test "$1" >"$T/source.log" 2>&1 || { echo "smtp-source failed: $(tail -3 "$T/source.log")" >&2; echo 0; return; }
  t1=$(now)
  python3 -c "print('%.0f' % ($MSGS / ($t1 - $t0)))"
}
# imap ADDR → sessions per second
imap() {
  local out
  out=$("$T/driver" imap "${@:2}" -addr "$1" -user bench@example.test -pass benchpw -n "$IMAPN" -c "$SESS") || { echo 0; return; }
  python3 -c "s, n = '$out'.split(); print('%.0f' % (int(n) / float(s)))"
}
ratio() { python3 -c "print('%.2f' % ($1 / $2 if $2 else 0))"; }

# Warm up once (page cache, spool directories), then measure.
smtp 127.0.0.1:"$S2" >/dev/null
imap 127.0.0.1:"$I2" >/dev/null
sd=$(smtp 127.0.0.2:"$SMTP_DIRECT"); s1=$(smtp 127.0.0.1:"$S1"); s2=$(smtp 127.0.0.1:"$S2")
id=$(imap 127.0.0.2:"$IMAP_DIRECT"); ih=$(imap 127.0.0.2:"$IMAP_PORT" -header); i1=$(imap 127.0.0.1:"$I1"); i2=$(imap 127.0.0.1:"$I2")
for h in mx1 mx2; do
  if grep -q 'connection refused' "$T/$h/smtpd.log" "$T/$h/imapd.log"; then
    echo "bench/proxy: $h refused connections:"; grep -h 'connection refused' "$T/$h"/*.log | head -3
  fi
done
n1=$(find "$T/mx1/spool" -path '*/env/*' -type f | wc -l); n2=$(find "$T/mx2/spool" -path '*/env/*' -type f | wc -l)

echo "Several hosts behind HAProxy ($(haproxy -v | head -1 | cut -d' ' -f1-3)), $(nproc) cores, $SESS at a time"
printf '%-34s %12s %14s %15s %12s\n' "" "direct, 1 host" "HAProxy, 1 host" "HAProxy, 2 hosts" "2 / 1 hosts"
printf '%-34s %12s %14s %15s %12s\n' "SMTP acceptance, msg/s (10 KB)" "$sd" "$s1" "$s2" "$(ratio "$s2" "$s1")"
printf '%-34s %12s %14s %15s %12s\n' "IMAP sessions/s (login..logout)" "$id" "$i1" "$i2" "$(ratio "$i2" "$i1")"
echo "HAProxy's cost on one host: SMTP $(ratio "$s1" "$sd"), IMAP $(ratio "$i1" "$id") of direct"
echo "IMAP straight to the +proxy listener, the header sent by the client: $ih sessions/s, $(ratio "$ih" "$id") of direct"
echo "messages spooled: mx1 $n1, mx2 $n2"
