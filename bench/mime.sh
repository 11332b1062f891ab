#!/usr/bin/env bash
# mime-pack beside mpack/munpack and coreutils base64: pack and unpack one
# attachment of SIZE_MB (default 100) random bytes; wall time and peak RSS
# (/usr/bin/time), best of RUNS (default 3). Not a test: prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-100}
RUNS=${RUNS:-3}
[ -x bin/mime-pack ] || make -s bin >/dev/null
for c in mpack munpack base64 /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "bench/mime.sh: $c not installed (apt-get install mpack time coreutils)"; exit 1; }
done
W=$(mktemp -d /tmp/letterbox-bench-mime.XXXXXX)
trap 'rm -rf "$W"' EXIT
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$W/big.bin"
: > "$W/empty"

# measure NAME CMD…: best wall time (s), best CPU time (user+sys, s) and the
# largest peak RSS (KiB) over the runs. CPU time is the steadier figure on a
# shared machine, where wall time also counts waiting for the disk and the
# other jobs.
measure() {
  local name=$1; shift
  local best="" cpu="" rss=0
  for _ in $(seq "$RUNS"); do
    rm -rf "$W/out" && mkdir "$W/out"
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$W/t" bash -c "$*" >/dev/null 2>"$W/err" || { echo "$name failed: $(cat "$W/err")"; return 1; }
    read -r t u s m < "$W/t"
    c=$(awk -v u="$u" -v s="$s" 'BEGIN{print u+s}')
    if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$t; fi
    if [ -z "$cpu" ] || awk -v a="$c" -v b="$cpu" 'BEGIN{exit !(a<b)}'; then cpu=$c; fi
    [ "$m" -gt "$rss" ] && rss=$m
  done
  printf '%s %s %s %s\n' "$name" "$best" "$cpu" "$rss" >> "$W/results"
}

MP=$PWD/bin/mime-pack
measure pack-mime-pack   "cd $W/out && $MP -t x@example.net -a $W/big.bin < $W/empty > $W/ours.eml"
measure pack-mpack       "rm -f $W/theirs.eml; cd $W/out && mpack -s bench -o $W/theirs.eml $W/big.bin"
measure pack-base64      "base64 $W/big.bin > $W/b64"
measure unpack-mime-pack "$MP unpack -d $W/out $W/ours.eml"
measure unpack-munpack   "cd $W/out && munpack -q $W/theirs.eml"
measure unpack-base64    "base64 -d $W/b64 > $W/out/dec"

# the files must come back intact for the numbers to mean anything
rm -rf "$W/out" && mkdir "$W/out" && "$MP" unpack -d "$W/out" "$W/ours.eml" >/dev/null
cmp -s "$W/out/big.bin" "$W/big.bin" || { echo "bench/mime.sh: unpacked file differs"; exit 1; }

awk -v size="$SIZE_MB" '
{ t[$1] = $2; c[$1] = $3; m[$1] = $4 }
function nz(x) { return x > 0 ? x : 0.001 }
function row(op, who,   k) {
  k = op "-" who
  printf "%-8s %-10s %8.2f s %8.2f s %8.0f MB/s %8.1f MiB\n", op, who, t[k], c[k], size / nz(t[k]), m[k] / 1024
}
END {
  printf "mime-pack bench: one %d MiB attachment, best of runs (wall time, CPU time user+sys, peak RSS)\n", size
  printf "%-8s %-10s %10s %10s %13s %12s\n", "op", "program", "wall", "cpu", "throughput", "peak RSS"
  for (i = 1; i <= 2; i++) {
    op = (i == 1) ? "pack" : "unpack"; peer = (i == 1) ? "mpack" : "munpack"
    row(op, "mime-pack"); row(op, peer); row(op, "base64")
  }
  printf "\nratios: time of the peer / time of mime-pack (>1: mime-pack is faster)\n"
  printf "%-20s %8s %8s   %s\n", "", "wall", "cpu", "target"
  for (i = 1; i <= 2; i++) {
    op = (i == 1) ? "pack" : "unpack"; peer = (i == 1) ? "mpack" : "munpack"
    me = op "-mime-pack"
    printf "%-8s vs %-8s %7.2fx %7.2fx   >= 3x\n", op, peer, t[op "-" peer] / nz(t[me]), c[op "-" peer] / nz(c[me])
    printf "%-8s vs %-8s %7.2fx %7.2fx   >= 0.67x (within 1.5x of base64)\n", op, "base64", t[op "-base64"] / nz(t[me]), c[op "-base64"] / nz(c[me])
  }
  printf "mime-pack peak RSS: pack %.1f MiB, unpack %.1f MiB (target < 32 MiB at any size)\n", m["pack-mime-pack"] / 1024, m["unpack-mime-pack"] / 1024
}' "$W/results"
