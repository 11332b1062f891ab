#!/usr/bin/env bash
# make bench: every bench/*.sh prints its own results table, peers beside us
# in the same run as ratios. Not a test: nothing here passes or fails.
set -uo pipefail
cd "$(dirname "$0")/.."
for b in bench/*.sh; do
  [ "$b" = bench/run.sh ] && continue
  echo "### $b"
  bash "$b" || echo "($b failed: exit $?)"
  echo
done
