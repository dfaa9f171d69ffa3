#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (SECONDS_EACH, default 300), keeps the minimised corpus
# in fuzz/corpus/<target> and copies any crash, leak, time-out or out-of-memory input into
# fuzz/regressions/<target>, which `make test` replays (crates/input/tests/fuzz_regressions.rs).
# Needs nightly Rust and cargo-fuzz (installed here when missing). Prints one summary line per
# target (the full log stays in fuzz/last-<target>.log); exits non-zero if a target failed.
#   scripts/fuzz.sh                      both targets, 5 minutes each
#   SECONDS_EACH=60 scripts/fuzz.sh parse_segment
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECONDS_EACH="${SECONDS_EACH:-300}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_segment decode_segment demux_allow_list)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cd "$ROOT/fuzz"
cargo +nightly fuzz build
status=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "regressions/$target" "artifacts/$target"
  log="$ROOT/fuzz/last-$target.log"
  # Segment messages are small; media inputs need room for a few seconds of a tiny clip.
  max_len=1024
  [ "$target" != parse_segment ] && max_len=65536
  # The first folder collects new inputs; seeds and kept regressions are read as starting points.
  if cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
      -max_total_time="$SECONDS_EACH" -max_len="$max_len" -rss_limit_mb="$RSS_LIMIT_MB" -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    outcome="no failure"
  else
    outcome="FAILED: $(grep -m1 -E 'ERROR: |panicked at' "$log" || echo "see $log")"
    status=1
  fi
  for found in "artifacts/$target"/*; do
    [ -f "$found" ] && mv "$found" "regressions/$target/"
  done
  cargo +nightly fuzz cmin "$target" "corpus/$target" -- -rss_limit_mb="$RSS_LIMIT_MB" -timeout=20 >/dev/null 2>&1 || true
  runs="$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
  echo "$target: ${SECONDS_EACH}s, $runs runs, corpus $(ls "corpus/$target" | wc -l) inputs," \
    "regressions $(ls "regressions/$target" | wc -l) -> $outcome"
done
exit $status
