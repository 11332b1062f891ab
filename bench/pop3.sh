#!/usr/bin/env bash
# POP3: LOGIN + STAT + UIDL + RETR of every message + QUIT on a
# 10,000-message Maildir, letterbox pop3d beside Dovecot's pop3 in the same
# run, and the peak memory (RSS) of each server process. Both run one session
# on stdin/stdout (inetd mode; Dovecot's pop3 started in preauth mode, so it
# skips the login that letterbox does), as the same unprivileged user, each on
# its own copy of the Maildir. "cold" is the first session on a fresh copy
# (Dovecot builds its index; we take sizes from the names); "warm" the best of
# three more (both mark messages seen at the first QUIT, as by default).
# A second mailbox of 20 messages of 5 MB shows whether memory grows with
# message size.
#
# The login rows are the time until STAT is answered (the server started, the
# login, the maildrop locked and listed), from the same sessions. The CPU
# rows are the user+system seconds of the driver (the client) and of the
# server in the fastest warm run: the driver waits for each reply, so its
# CPU is part of every server's time; a client CPU near the elapsed time,
# or the two together near the two cores, says the run measured the
# client or the machine.
#
# Environment: POP3_BENCH_N (10000), POP3_BENCH_MIN/MAX (message size range,
# 500..20000 octets); POP3_BENCH_ALT: another pop3d binary (a variant being
# measured) run as "alt" in the same run, interleaved with the others.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${POP3_BENCH_N:-10000}
MIN=${POP3_BENCH_MIN:-500}
MAX=${POP3_BENCH_MAX:-20000}

[ -x bin/pop3d ] || make -s bin >/dev/null
work=$(mktemp -d /tmp/letterbox-bench-pop3.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
go build -o "$work/driver" ./bench/pop3
cp bin/pop3d "$work/pop3d"
if [ -n "${POP3_BENCH_ALT:-}" ]; then cp "$POP3_BENCH_ALT" "$work/pop3d-alt"; fi

# Run the servers unprivileged: Dovecot refuses to serve mail as root.
asuser=()
owner=$(id -un)
runas=$owner
if [ "$(id -u)" = 0 ]; then
  asuser=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  owner=nobody:nogroup
  runas=nobody
fi

"$work/driver" gen "$work/small" "$N" "$MIN" "$MAX"
"$work/driver" gen "$work/large" 20 $((5 << 20)) $((5 << 20))

cat >"$work/letterbox.conf" <<EOF
hostname = "bench.example.test"
domains = ["example.test"]
users = "$work/users"
mail-root = "$work/mail"
log-level = "warn"
EOF
dovecot_conf() { # $1 = maildir
  cat >"$work/dovecot-$2.conf" <<EOF
protocols = pop3
mail_location = maildir:$1
ssl = no
log_path = /dev/stderr
EOF
}

have_dovecot=0
[ -x /usr/lib/dovecot/pop3 ] && have_dovecot=1

# run SERVER MAILDIR → "seconds rss_kib msgs octets"
run() {
  local server=$1 md=$2 name=$3
  case $server in
  letterbox | alt)
    local bin=$work/pop3d
    [ "$server" = alt ] && bin=$work/pop3d-alt
    printf 'bench@example.test:{PLAIN}benchpw::::::mail=maildir:%s\n' "$md" >"$work/users"
    chown "$owner" "$work/users" "$work/letterbox.conf" 2>/dev/null || true
    "$work/driver" run -user bench@example.test -pass benchpw -- \
      "${asuser[@]}" env LETTERBOX_CONFIG="$work/letterbox.conf" TCPREMOTEIP=127.0.0.1 "$bin"
    ;;
  dovecot)
    dovecot_conf "$md" "$name"
    chown "$owner" "$work/dovecot-$name.conf" 2>/dev/null || true
    "$work/driver" run -preauth -- \
      "${asuser[@]}" env -i USER="$runas" HOME="$work" /usr/lib/dovecot/pop3 -c "$work/dovecot-$name.conf" 2>>"$work/dovecot.stderr"
    ;;
  esac
}

declare -A res
servers=(letterbox)
[ -n "${POP3_BENCH_ALT:-}" ] && servers+=(alt)
[ $have_dovecot = 1 ] && servers+=(dovecot)
# better returns the faster of two "seconds rss msgs octets login clientcpu
# servercpu" results;
# fastest FIELD of two results.
better() { if [ -z "$2" ] || awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN{exit !(a<b)}'; then echo "$1"; else echo "$2"; fi; }
fastest() { if [ -z "$2" ]; then echo "$1"; else awk -v a="$1" -v b="$2" 'BEGIN{print (a<b)?a:b}'; fi; }
for box in small large; do
  for server in "${servers[@]}"; do
    md="$work/$server-$box"
    rm -rf "$md"
    cp -a "$work/$box" "$md"
    chown -R "$owner" "$md" 2>/dev/null || true
    res[$server-$box-cold]=$(run $server "$md" "$box")
    res[$server-$box-cold-login]=$(echo "${res[$server-$box-cold]}" | awk '{print $5}')
  done
  # Warm runs alternate between the servers so that load from elsewhere on
  # the machine falls on both alike; the best of three counts.
  for i in 1 2 3; do
    for server in "${servers[@]}"; do
      r=$(run $server "$work/$server-$box" "$box")
      res[$server-$box-warm]=$(better "$r" "${res[$server-$box-warm]:-}")
      res[$server-$box-warm-login]=$(fastest "$(echo "$r" | awk '{print $5}')" "${res[$server-$box-warm-login]:-}")
    done
  done
  for server in "${servers[@]}"; do rm -rf "$work/$server-$box"; done
done

field() { echo "$1" | awk -v f="$2" '{print $f}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a>0) printf "%.2f", b/a; else print "-" }'; }

small_mb=$(field "${res[letterbox-small-cold]}" 4)
echo "POP3: LOGIN+STAT+UIDL+RETR all+QUIT, one session on stdin/stdout"
echo "mailboxes: $N messages ($MIN..$MAX octets, $((small_mb / 1048576)) MiB as sent); 20 messages of 5 MiB"
echo "ratio = other / letterbox (time: >1 means letterbox is faster; RSS: >1 means letterbox uses less)"
echo "login = until STAT is answered (best of the warm runs for warm)"
echo
others=()
for s in "${servers[@]}"; do [ "$s" != letterbox ] && others+=("$s"); done
printf '%-28s %14s' "measure" "letterbox"
for o in "${others[@]}"; do printf ' %14s %8s' "$o" "ratio"; done
echo
# row LABEL UNIT KEY FIELD: one measure of every server (FIELD of res[SERVER-KEY], or the value itself when FIELD is 0)
row() {
  local label=$1 unit=$2 key=$3 f=$4 l v
  val() { if [ "$f" = 0 ]; then echo "${res[$1-$key]:-}"; elif [ -n "${res[$1-$key]:-}" ]; then field "${res[$1-$key]}" "$f"; fi; }
  l=$(val letterbox)
  printf '%-28s %13s%s' "$label" "$l" "$unit"
  for o in "${others[@]}"; do
    v=$(val "$o")
    printf ' %13s%s %8s' "${v:--}" "$unit" "$([ -z "$v" ] && echo - || ratio "$l" "$v")"
  done
  echo
}
for box in small large; do
  for phase in cold warm; do
    row "time $box $phase" s "$box-$phase" 1
    row "login $box $phase" s "$box-$phase-login" 0
  done
  row "client CPU $box (warm)" s "$box-warm" 6
  row "server CPU $box (warm)" s "$box-warm" 7
  row "peak RSS $box (warm)" K "$box-warm" 2
done
if [ $have_dovecot = 0 ]; then echo "(dovecot-pop3d not installed: no peer column)"; fi
