#!/bin/bash
# Paired A/B of two preload libraries on one benchmark binary, for a noisy
# machine: each round runs A and B back to back (alternating which goes
# first) and records B/A; the median of the ratios is the estimate, and the
# spread of the ratios shows how far to trust it.
#
# usage: benches/scripts/pair.sh ROUNDS "BIN ARGS..." A.so B.so
#   BIN is a binary in target/release (larson, st_pair, random_mixed, ...)
#   e.g. benches/scripts/pair.sh 15 "larson 1 8 1000 5000 100 4141 2" old.so new.so
set -eu
R=$1; CMD=$2; A=$3; B=$4
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
run() { LD_PRELOAD=$1 "$ROOT"/target/release/$CMD 2>&1 | awk '/Throughput/{print $3}'; }
rs=""
for r in $(seq 1 "$R"); do
  if [ $((r % 2)) = 0 ]; then a=$(run "$A"); b=$(run "$B"); else b=$(run "$B"); a=$(run "$A"); fi
  rs="$rs $(echo "$b $a" | awk '{printf "%.3f", $1/$2}')"
done
echo "B/A ratios:$rs"
echo $rs | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print "median B/A = " a[int((NR+1)/2)] " (n=" NR ")"}'
