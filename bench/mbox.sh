#!/usr/bin/env bash
# mailuser import and export on a large mbox: wall time and peak memory
# (GNU time's maximum RSS), for a small file and a large one (default
# 1 GiB), so that constant memory shows as the same RSS at both sizes.
# The mbox is generated: messages of ~100 KB (lines of 76 characters, one
# "From " line in each body to quote) and one message of a quarter of the
# large file, which must stream like the others.
# Usage: bench/mbox.sh [SIZE_MB]   (needs bin/mailuser: make bin)
set -uo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
MAILUSER=$PWD/bin/mailuser
[ -x "$MAILUSER" ] || { echo "bin/mailuser missing: run make bin" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time (GNU time) missing: apt-get install time" >&2; exit 1; }
W=$(mktemp -d /var/tmp/letterbox-bench-mbox.XXXXXX)
trap 'rm -rf "$W"' EXIT
printf 'hostname = "bench.test"\ndomains = ["bench.test"]\nusers = "%s/users"\nmail-root = "%s/mail"\n' "$W" "$W" > "$W/conf"
export LETTERBOX_CONFIG=$W/conf
: > "$W/users"

# gen FILE MB: an mboxrd file of about MB mebibytes.
gen() {
  python3 - "$1" "$2" <<'EOF'
import sys
path, mb = sys.argv[1], int(sys.argv[2])
line = ("x" * 75 + "\n").encode()
body = b"From the body, quoted\n" + line * 1300            # ~100 KB
big = max(0, mb * 2**20 // 4)                          # a quarter in one message
with open(path, "wb", buffering=1 << 20) as f:
    n = 0
    written = 0
    while written < mb * 2**20:
        n += 1
        head = b"From bench@bench.test Mon Mar  4 10:%02d:%02d 2024\nFrom: bench@bench.test\nSubject: %d\nStatus: RO\n\n" % (n // 60 % 60, n % 60, n)
        f.write(head)
        if n == 2 and big:
            k = big // len(line)
            for _ in range(k // 1024):
                f.write(line * 1024)
            written += k * len(line)
        f.write(body.replace(b"From the", b">From the"))
        f.write(b"\n")
        written += len(head) + len(body) + 1
    print(n)
EOF
}

# run LABEL CMD...: wall seconds and max RSS (KiB) of CMD.
run() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" > "$W/out" 2> "$W/err" || { echo "$label failed:" >&2; cat "$W/err" >&2; return 1; }
  read -r secs rss < "$W/time"
  echo "$secs $rss"
}

printf '%-10s %9s %12s %12s %12s %12s\n' "mbox" "messages" "import s" "import RSS" "export s" "export RSS"
for mb in 10 "$SIZE"; do
  u="u$mb@bench.test"
  echo "$u:{PLAIN}x::::::" >> "$W/users"
  n=$(gen "$W/in.mbox" "$mb") || exit 1
  sync
  read -r is ir < <(run import "$MAILUSER" import "$u" "$W/in.mbox") || exit 1
  rm -f "$W/in.mbox"
  read -r es er < <(run export "$MAILUSER" export "$u" --folder INBOX) || exit 1
  bytes=$(stat -c %s "$W/out")
  rm -f "$W/out"
  rm -rf "$W/mail"
  printf '%-10s %9s %12s %9s KiB %12s %9s KiB   (export %d MiB)\n' "${mb} MiB" "$n" "$is" "$ir" "$es" "$er" $((bytes >> 20))
done
