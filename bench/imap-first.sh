#!/usr/bin/env bash
# imapd's first open, A/B: bench/imap.sh's "first" row (LOGIN + SELECT
# INBOX + UID FETCH 1:* (FLAGS) on a fresh copy of a Maildir whose messages
# are all in new/, page cache dropped first) for several binaries and
# Dovecot, alternated, TRIALS times, each on its own fresh copy. One run of
# bench/imap.sh has one first open per server, and single sessions move by
# ±30 % on a shared machine: the per-trial ratio and the medians here are
# what separate two binaries.
#   TRIALS=10 bash bench/imap-first.sh BINARY...   (default: bin/imapd)
# One line per session: name, the driver's phases (ms since the start),
# CPU ms (user+system of the session's process), read KiB, load; then per
# server the medians, and the median of Dovecot ÷ server per trial.
# Needs root (drop_caches, setpriv); IMAP_BENCH_N as bench/imap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-6}
[ $# -gt 0 ] || set -- bin/imapd
. bench/imap-ab.sh
imap_ab_setup imapfirst "$@"
cat >"$work/letterbox.conf" <<EOC
hostname = "bench.example.test"
domains = ["example.test"]
users = "$work/users"
mail-root = "$work/mail"
log-level = "warn"
auth-failure-delay = "1ms"
EOC
chown nobody:nogroup "$work/letterbox.conf"
tm=(/usr/bin/time -f "TIME in=%I cpu=%U+%S")
runv() { # SERVER MAILDIR
  if [ "$1" = dovecot ]; then
    printf 'protocols = imap\nmail_location = maildir:%s\nssl = no\nlog_path = /dev/null\n' "$2" >"$work/dovecot.conf"
    chown nobody:nogroup "$work/dovecot.conf"
    "$work/driver" run -phases -preauth -- "${tm[@]}" "${asuser[@]}" env -i USER=nobody HOME="$work" \
      /usr/lib/dovecot/imap -c "$work/dovecot.conf"
  else
    printf 'bench@example.test:{PLAIN}benchpw::::::mail=maildir:%s\n' "$2" >"$work/users"
    chown nobody:nogroup "$work/users"
    "$work/driver" run -phases -user bench@example.test -pass benchpw -- "${tm[@]}" "${asuser[@]}" \
      env LETTERBOX_CONFIG="$work/letterbox.conf" TCPREMOTEIP=127.0.0.1 "$work/$1"
  fi
}
servers=("${names[@]}")
[ -x /usr/lib/dovecot/imap ] && servers+=(dovecot)
out=$work/out
for t in $(seq "$TRIALS"); do
  # The order turns each trial, so that no server always goes first.
  k=$(( (t - 1) % ${#servers[@]} ))
  order=("${servers[@]:k}" "${servers[@]:0:k}")
  for s in "${order[@]}"; do
    rm -rf "$work/md"
    cp -a "$work/box" "$work/md"
    chown -R nobody:nogroup "$work/md"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    r=$(runv "$s" "$work/md" 2>&1 | grep -v '^imap(' | tr '\n' ' ')
    left=$(ls "$work/md/new" | wc -l)
    echo "$s trial=$t $r newleft=$left load=$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out"
  done
done
awk '
{ v=$1; t=$2; for (i=3;i<=NF;i++) { if ($i=="exit") w=$(i+1); if ($i ~ /^in=/) { split($i,a,"="); ib=a[2]/2 }
    if ($i ~ /^cpu=/) { split($i,c,"=|\\+"); cpu=(c[2]+c[3])*1000 } }
  W[v]=W[v]" "w; I[v]=I[v]" "ib; C[v]=C[v]" "cpu; n[v]++; T[v,t]=w; vs[v]=1 }
function med(s,  a,k,i,j,x) { k=split(s,a," "); for (i=1;i<=k;i++) for (j=i+1;j<=k;j++) if (a[j]+0<a[i]+0) { x=a[i]; a[i]=a[j]; a[j]=x }
  return (k%2) ? a[(k+1)/2] : (a[k/2]+a[k/2+1])/2 }
END { print "medians:"
  for (v in vs) {
    r=""; if (v != "dovecot") for (k in T) { split(k,p,SUBSEP); if (p[1]==v && T["dovecot",p[2]]>0) r=r" "T["dovecot",p[2]]/T[v,p[2]] }
    printf "  %-16s n=%d  wall %4.0f ms  CPU %3.0f ms  read %6.0f KiB", v, n[v], med(W[v]), med(C[v]), med(I[v])
    if (r != "") printf "  dovecot/this per trial: median %.2f (%s)", med(r), r
    printf "\n" } }' "$out"
