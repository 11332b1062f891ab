#!/usr/bin/env bash
# IMAP: letterbox imapd beside Dovecot's imap on copies of the same
# 10,000-message Maildir, in the same run, as the same unprivileged user.
#   open    LOGIN + SELECT INBOX + UID FETCH 1:* (FLAGS) + LOGOUT, one session
#           on stdin/stdout (inetd mode; Dovecot's imap in preauth mode, so it
#           skips the login letterbox does): "first" on a fresh copy (new/
#           taken into cur/, UIDs given, Dovecot's index and our cache built;
#           a second row adds the further letterbox sessions that finished
#           taking new/ into cur/, which its first session leaves undone),
#           "cold" with the page cache dropped (the median of three), "warm"
#           the best of three;
#   bodies  the same, then UID FETCH 1:* (BODY.PEEK[]) of every message, warm;
#   idle    memory per session with IMAP_BENCH_IDLE (1,000) sessions in IDLE
#           on INBOX: one imapd process serving them all (as the mailbox
#           owner: sessions in-process) against one Dovecot imap process per
#           session (its model; imap-login and the master not counted). PSS
#           shares each shared page among the processes mapping it.
# Ratios are dovecot / letterbox: above 1 means letterbox is faster or
# smaller.
#
# Environment: IMAP_BENCH_N (10000), IMAP_BENCH_MIN/MAX (message sizes,
# 500..20000 octets), IMAP_BENCH_IDLE (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${IMAP_BENCH_N:-10000}
MIN=${IMAP_BENCH_MIN:-500}
MAX=${IMAP_BENCH_MAX:-20000}
IDLE=${IMAP_BENCH_IDLE:-1000}

[ -x bin/imapd ] || make -s bin >/dev/null
work=$(mktemp -d /tmp/letterbox-bench-imap.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$work"' EXIT
chmod 755 "$work"
go build -o "$work/driver" ./bench/imap
go build -o "$work/gen" ./bench/pop3 # its generator: LF messages named ,S=,W= as deliver does
cp bin/imapd "$work/imapd"

# Run the servers unprivileged: Dovecot refuses to serve mail as root.
asuser=()
owner=$(id -un)
runas=$owner
if [ "$(id -u)" = 0 ]; then
  asuser=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  owner=nobody:nogroup
  runas=nobody
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$work/gen" gen "$work/box" "$N" "$MIN" "$MAX"

cat >"$work/letterbox.conf" <<EOF
hostname = "bench.example.test"
domains = ["example.test"]
users = "$work/users"
mail-root = "$work/mail"
log-level = "warn"
auth-failure-delay = "1ms"
EOF
dovecot_conf() { # $1 = maildir, $2 = name
  cat >"$work/dovecot-$2.conf" <<EOF
protocols = imap
mail_location = maildir:$1
ssl = no
log_path = /dev/null
EOF
  chown "$owner" "$work/dovecot-$2.conf" 2>/dev/null || true
}

have_dovecot=0
[ -x /usr/lib/dovecot/imap ] && have_dovecot=1
can_drop=0
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then can_drop=1; fi

# run SERVER MAILDIR [-bodies] → "seconds rss_kib msgs octets"
run() {
  local server=$1 md=$2 extra=${3:-}
  case $server in
  letterbox)
    printf 'bench@example.test:{PLAIN}benchpw::::::mail=maildir:%s\n' "$md" >"$work/users"
    chown "$owner" "$work/users" "$work/letterbox.conf" 2>/dev/null || true
    "$work/driver" run $extra -user bench@example.test -pass benchpw -- \
      "${asuser[@]}" env LETTERBOX_CONFIG="$work/letterbox.conf" TCPREMOTEIP=127.0.0.1 "$work/imapd"
    ;;
  dovecot)
    dovecot_conf "$md" "$(basename "$md")"
    "$work/driver" run $extra -preauth -- \
      "${asuser[@]}" env -i USER="$runas" HOME="$work" /usr/lib/dovecot/imap -c "$work/dovecot-$(basename "$md").conf"
    ;;
  esac
}

declare -A res cold
servers=(letterbox)
[ $have_dovecot = 1 ] && servers+=(dovecot)
better() { if [ -z "$2" ] || awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN{exit !(a<b)}'; then echo "$1"; else echo "$2"; fi; }
for server in "${servers[@]}"; do
  md="$work/$server-box"
  cp -a "$work/box" "$md"
  chown -R "$owner" "$md" 2>/dev/null || true
  sync
  [ $can_drop = 1 ] && echo 3 >/proc/sys/vm/drop_caches
  res[$server-first]=$(run $server "$md")
done
# imapd answers a first SELECT of a large new/ before taking it into cur/:
# the renames go on in the background, and the session's process finishes
# them after its client is answered (up to 10 s; mailstore's Store.Close),
# within the timed run, as Dovecot's first open renames all. Should any be
# left, they would fall into the cold runs: sessions until new/ is empty,
# uncounted in the rows below, with their time added to a second "first"
# row.
settle_n=0 settle_s=0
while [ -n "$(ls -A "$work/letterbox-box/new" | head -1)" ] && [ $settle_n -lt 100 ]; do
  r=$(run letterbox "$work/letterbox-box")
  settle_s=$(awk -v a="$settle_s" -v b="${r%% *}" 'BEGIN{print a+b}')
  settle_n=$((settle_n + 1))
done
res[letterbox-firstall]="$(awk -v a="${res[letterbox-first]%% *}" -v b="$settle_s" 'BEGIN{printf "%.3f", a+b}')"
res[dovecot-firstall]=${res[dovecot-first]:-}

if [ $can_drop = 1 ]; then
  # Three cold runs each, alternating, the median counting: one run from
  # disk varies with whatever else the disk does at that moment.
  for i in 1 2 3; do
    for server in "${servers[@]}"; do
      sync
      echo 3 >/proc/sys/vm/drop_caches
      cold[$server]+="$(run $server "$work/$server-box")"$'\n'
    done
  done
  for server in "${servers[@]}"; do
    res[$server-cold]=$(printf '%s' "${cold[$server]}" | sort -n | sed -n 2p)
  done
fi
# Warm runs alternate between the servers so that load from elsewhere on
# the machine falls on both alike; the best of three counts.
for i in 1 2 3; do
  for server in "${servers[@]}"; do
    res[$server-warm]=$(better "$(run $server "$work/$server-box")" "${res[$server-warm]:-}")
    res[$server-bodies]=$(better "$(run $server "$work/$server-box" -bodies)" "${res[$server-bodies]:-}")
  done
done

# Idle sessions.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'bench@example.test:{PLAIN}benchpw::::::mail=maildir:%s\n' "$work/letterbox-box" >"$work/users"
"${asuser[@]}" env LETTERBOX_CONFIG="$work/letterbox.conf" "$work/imapd" --listen "127.0.0.1:$port" --allow-insecure-auth &
pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
ipid=$(pgrep -f -n "$work/imapd --listen 127.0.0.1:$port")
res[letterbox-idle]=$("$work/driver" idle -n "$IDLE" -pid "$ipid" -addr "127.0.0.1:$port" -user bench@example.test -pass benchpw)
if [ $have_dovecot = 1 ]; then
  res[dovecot-idle]=$("$work/driver" idle -n "$IDLE" -spawn -- \
    "${asuser[@]}" env -i USER="$runas" HOME="$work" /usr/lib/dovecot/imap -c "$work/dovecot-dovecot-box.conf")
fi

field() { echo "$1" | awk -v f="$2" '{print $f}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a>0) printf "%.2f", b/a; else print "-" }'; }
mb=$(du -sm "$work/box" | cut -f1)
echo "IMAP: one session on stdin/stdout; $N messages ($MIN..$MAX octets, $mb MiB); $IDLE sessions in IDLE"
echo "ratio = dovecot / letterbox (time: >1 means letterbox is faster; memory: >1 means letterbox uses less)"
[ $can_drop = 0 ] && echo "(page cache cannot be dropped here: no cold row, and the first open ran warm)"
echo
printf '%-44s %12s %12s %8s\n' "measure" "letterbox" "dovecot" "ratio"
row() { # label key field unit
  local l=${res[letterbox-$2]:-} d=${res[dovecot-$2]:-}
  [ -z "$l" ] && return
  local lv dv
  lv=$(field "$l" "$3")
  if [ -n "$d" ]; then dv=$(field "$d" "$3"); else dv=-; fi
  printf '%-44s %11s%s %11s%s %8s\n' "$1" "$lv" "$4" "$dv" "$([ "$dv" = - ] || echo "$4")" "$([ "$dv" = - ] && echo - || ratio "$lv" "$dv")"
}
row "LOGIN+SELECT+UID FETCH 1:* (FLAGS), first" first 1 s
row "  + the sessions that emptied new/ (below)" firstall 1 s
row "  the same, cold page cache" cold 1 s
row "  the same, warm" warm 1 s
row "  peak RSS, warm (KiB)" warm 2 ""
row "... + UID FETCH 1:* BODY.PEEK[], warm" bodies 1 s
row "  peak RSS (KiB)" bodies 2 ""
row "memory per idle session, PSS (KiB)" idle 1 ""
row "memory per idle session, RSS (KiB)" idle 2 ""
l=${res[letterbox-bodies]}
echo
echo "new/ into cur/: letterbox's first session and $settle_n more (${settle_s}s, warm); Dovecot's first session"
echo "bodies fetched: $(field "$l" 3) messages, $(field "$l" 4) octets (letterbox); $(field "${res[dovecot-bodies]:-- - - -}" 4) octets (dovecot)"
[ $have_dovecot = 0 ] && echo "(dovecot-imapd not installed: no peer column)"
exit 0
