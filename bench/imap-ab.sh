# Sourced by bench/imap-cold.sh and bench/imap-first.sh, which alternate
# several imapd binaries and Dovecot on one generated Maildir.
#   imap_ab_setup NAME BINARY...
# builds the driver and the generator, copies each BINARY into $work
# (their names, unique, in the array names), and generates $work/box with
# IMAP_BENCH_N messages (10,000); asuser runs a command as nobody.
imap_ab_setup() {
  local tag=$1 b n
  shift
  [ -x "$1" ] || make -s bin >/dev/null
  N=${IMAP_BENCH_N:-10000}
  work=$(mktemp -d "/tmp/letterbox-bench-$tag.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"
  go build -o "$work/driver" ./bench/imap
  go build -o "$work/gen" ./bench/pop3
  names=()
  for b in "$@"; do
    n=$(basename "$b").${#names[@]}
    cp "$b" "$work/$n"
    names+=("$n")
  done
  asuser=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  "$work/gen" gen "$work/box" "$N" 500 20000
}
