#!/usr/bin/env bash
# Compare the writer and fanout benchmarks of an earlier commit and the
# working tree in ONE run, interleaved (before, after, before, after, …), so
# the shared machine's drift hits both builds alike. Reports each round; read
# the ratios within a pair.
#   scripts/compare-builds.sh <before-commit> [pairs]
# The earlier commit is built in target/compare (a git worktree, removed after).
set -euo pipefail
cd "$(dirname "$0")/.."
before_rev="${1:?give the commit to compare against}"
pairs="${2:-3}"
root="$PWD"
work="$root/target/compare"
mkdir -p "$work"
if [ ! -d "$work/before" ]; then
  git worktree add -q --detach "$work/before" "$before_rev"
fi
trap 'git -C "$root" worktree remove --force "$work/before" >/dev/null 2>&1 || true' EXIT

bench_exe() { # dir target-dir bench → path of the bench executable
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --no-run --bench "$3" 2>&1) | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1
}
before_writer="$(bench_exe "$work/before" "$work/target-before" writer)"
(cd "$work/before" && CARGO_TARGET_DIR="$work/target-before" cargo build --release --bin syncgate -q)
after_writer="$(bench_exe "$root" "$root/target" writer)"
after_fanout="$(bench_exe "$root" "$root/target" fanout)"
cargo build --release --bin syncgate -q
before_bin="$work/target-before/release/syncgate"
after_bin="$root/target/release/syncgate"
case "$before_writer$after_writer$after_fanout" in *target*) ;; *) echo "could not find the bench executables" >&2; exit 1 ;; esac

echo "== writer: $pairs interleaved pairs (each one round of the four modes)"
for i in $(seq "$pairs"); do
  for which in before after; do
    exe="before_writer"; [ "$which" = after ] && exe="after_writer"
    echo "-- pair $i, $which"
    SYNCGATE_BENCH_ROUNDS=1 "${!exe}" | grep -E '^\| 1 \||median'
  done
done

echo "== fanout: $pairs interleaved pairs, syncgate only (the same harness drives both binaries)"
for i in $(seq "$pairs"); do
  for which in before after; do
    bin="before_bin"; [ "$which" = after ] && bin="after_bin"
    echo "-- pair $i, $which"
    FANOUT_ONLY=syncgate FANOUT_ROUNDS=1 FANOUT_RATES="${FANOUT_RATES:-200}" FANOUT_SYNCGATE_BIN="${!bin}" "$after_fanout" 2>/dev/null |
      grep -E 'p50|p99|frames/s|µs/frame|CPU' || true
  done
done
