#!/bin/sh
# mutate.sh [-only REGEXP] [-j N] [-no-baseline]: break each line of
# scripts/mutations.txt in a scratch copy of the tree, run the tests named
# for it, and print the table of what caught each mutation (or MISSED),
# then every fsync/syncfs/directory flush no row covers. Not part of
# make test: a full run takes a while (each row builds and runs its tests).
set -eu
cd "$(dirname "$0")/.."
exec go run ./scripts/mutate "$@"
