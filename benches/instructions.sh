#!/usr/bin/env bash
# Instructions the dataflow workers execute per event, counted by valgrind's callgrind: unlike
# wall-clock time on a shared VM, the count repeats to within 0.01 % from run to run, so a
# change of 1 % shows. Only the threads the run starts are counted, not the generation of the
# input on the main thread. Needs valgrind and a release build.
#
#   benches/instructions.sh [--events N] [tributary bench options…]
#   benches/instructions.sh --pipeline orders-replica --keys 100000 --no-iceberg
#
# Set TRIBUTARY_BIN to measure another build; the callgrind profiles are left in
# target/callgrind.out-NN, one per thread (read them with callgrind_annotate), valgrind's log in
# target/callgrind.log.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=${TRIBUTARY_BIN:-$root/target/release/tributary}
events=100000
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --events) events=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[[ -x $binary ]] || { echo "no $binary: cargo build --release -p tributary" >&2; exit 1; }

out=$root/target/callgrind.out
log=$root/target/callgrind.log
rm -f "$out" "$out"-*
# One profile per thread: the main thread only generates the input and waits, so the count is
# everything the other threads (the timely workers, and the sinks' threads) execute. Counting
# threads rather than functions does not depend on what the compiler inlined.
if ! valgrind --tool=callgrind --separate-threads=yes \
  --callgrind-out-file="$out" \
  "$binary" bench --events "$events" "${args[@]}" >/dev/null 2>"$log"; then
  echo "the bench failed under valgrind:" >&2
  grep -v '^==' "$log" >&2
  exit 1
fi
collected=0
for profile in "$out"-*; do
  [[ $profile == "$out-01" ]] && continue
  count=$(sed -n 's/^summary: \([0-9]*\).*/\1/p; s/^totals: \([0-9]*\).*/\1/p' "$profile" | head -n 1)
  collected=$((collected + ${count:-0}))
done
(( collected > 0 )) || { echo "callgrind reported no count" >&2; exit 1; }
echo "$collected instructions, $((collected / events)) per event (${args[*]:-default pipeline}, $events events)"
