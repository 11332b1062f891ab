#!/usr/bin/env bash
# make fuzz: run every Fuzz* target for FUZZTIME (default 20s) each. The seed
# corpora (testdata/) already run as plain tests in `make test`; this
# explores beyond them. A crasher is saved by go test under testdata/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-20s}
grep -rl --include='*_test.go' '^func Fuzz' pkg | xargs -n1 dirname | sort -u | while read -r dir; do
  for f in $(grep -h --include='*_test.go' -r '^func Fuzz' "$dir" | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    echo "== ./$dir $f ($t)"
    go test "./$dir" -run '^$' -fuzz "^$f\$" -fuzztime "$t"
  done
done
