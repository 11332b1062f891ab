#!/usr/bin/env bash
# imapd's cold-page-cache session, several binaries and Dovecot alternated,
# with what each session read from disk: bench/imap.sh's "cold" row is a
# median of three wall times, which the load of a shared machine swamps;
# the bytes a session reads (getrusage's ru_inblock, through /usr/bin/time)
# do not move with the load.
#   bash bench/imap-cold.sh [-n REPS] BINARY...   (default: bin/imapd)
# One line per session: name, the driver's phases (ms since the start),
# read KiB, CPU ms; then the medians. Needs root (drop_caches, setpriv).
# Note: drop_caches keeps pages that some process maps, so files in use
# elsewhere (libc; on the bench VM also Dovecot's libraries) are not read.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=8
if [ "${1:-}" = -n ]; then REPS=$2; shift 2; fi
[ $# -gt 0 ] || set -- bin/imapd
. bench/imap-ab.sh
imap_ab_setup imapcold "$@"
cp -a "$work/box" "$work/lb"
cp -a "$work/box" "$work/dc"
chown -R nobody:nogroup "$work/lb" "$work/dc"
cat >"$work/letterbox.conf" <<EOC
hostname = "bench.example.test"
domains = ["example.test"]
users = "$work/users"
mail-root = "$work/mail"
log-level = "warn"
auth-failure-delay = "1ms"
EOC
printf 'bench@example.test:{PLAIN}benchpw::::::mail=maildir:%s\n' "$work/lb" >"$work/users"
printf 'protocols = imap\nmail_location = maildir:%s\nssl = no\nlog_path = /dev/null\n' "$work/dc" >"$work/dovecot.conf"
chown nobody:nogroup "$work/users" "$work/letterbox.conf" "$work/dovecot.conf"
tm=(/usr/bin/time -f "TIME in=%I cpu=%U+%S")
runv() {
  if [ "$1" = dovecot ]; then
    "$work/driver" run -phases -preauth -- "${tm[@]}" "${asuser[@]}" env -i USER=nobody HOME="$work" \
      /usr/lib/dovecot/imap -c "$work/dovecot.conf"
  else
    "$work/driver" run -phases -user bench@example.test -pass benchpw -- "${tm[@]}" "${asuser[@]}" \
      env LETTERBOX_CONFIG="$work/letterbox.conf" TCPREMOTEIP=127.0.0.1 "$work/$1"
  fi
}
servers=("${names[@]}")
[ -x /usr/lib/dovecot/imap ] && servers+=(dovecot)
for s in "${servers[@]}"; do runv "$s" >/dev/null 2>&1; done # first open: caches and indexes built
# imapd leaves most of a large new/ to later sessions (bench/imap.sh): settle.
for _ in $(seq 100); do
  [ -z "$(ls -A "$work/lb/new" | head -1)" ] && break
  runv "${names[0]}" >/dev/null 2>&1
done
out=$work/out
for _ in $(seq "$REPS"); do
  for s in "${servers[@]}"; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    r=$(runv "$s" 2>&1 | grep -v '^imap(' | tr '\n' ' ')
    echo "$s $r load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out"
  done
done
awk '
{ v=$1; for (i=2;i<=NF;i++) { if ($i=="exit") w=$(i+1); if ($i ~ /^in=/) { split($i,a,"="); ib=a[2]/2 }
    if ($i ~ /^cpu=/) { split($i,c,"=|\\+"); cpu=(c[2]+c[3])*1000 } }
  W[v]=W[v]" "w; I[v]=I[v]" "ib; C[v]=C[v]" "cpu; n[v]++ }
function med(s,  a,k,i,j,t) { k=split(s,a," "); for (i=1;i<=k;i++) for (j=i+1;j<=k;j++) if (a[j]+0<a[i]+0) { t=a[i]; a[i]=a[j]; a[j]=t }
  return (k%2) ? a[(k+1)/2] : (a[k/2]+a[k/2+1])/2 }
END { print "medians:"; for (v in W) printf "  %-16s n=%d  wall %4.0f ms  read %6.0f KiB  CPU %3.0f ms\n", v, n[v], med(W[v]), med(I[v]), med(C[v]) }' "$out"
