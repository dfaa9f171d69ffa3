#!/usr/bin/env bash
# The local demo, in the open world: a tansu broker on 127.0.0.1, the audio-visual digit clips
# (`make setup` built them: MNIST digits drifting across the frame while a person says the digit)
# streamed as 4 camera streams into the daemon, which starts from a model that knows only the
# digits 0-4 (`make setup` trains it: scripts/demo-model.sh) and learns online while it assigns
# every window. Of the known digits' clips only 30% carry their label; the new digits 5-9 carry
# none, and arrive in stages: 5 and 6 from the start, 7 and 8 after STAGE_TIME, 9 after twice
# that. Then the test clips (MNIST test images, voices never heard), their known digits again
# 70% unlabelled, and one segment of random bytes. It ends with All / Old / New accuracy over the
# test clips' unlabelled windows, the estimated number of new digits against the truth, and the
# HTML report's path. Everything started here is stopped on exit.
#   env: TRAIN_CLIPS=1520 TEST_CLIPS=400 RATE=8 (segments per second) STAGE_TIME=50s
#        UNLABELLED_KNOWN=0.7 START= (default: the checkpoint scripts/demo-model.sh made)
#        DEMO_OUT=results/demo
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-demo.XXXXXX)
source "$(dirname "$0")/lib.sh"
TRAIN_CLIPS="${TRAIN_CLIPS:-1520}" TEST_CLIPS="${TEST_CLIPS:-400}" RATE="${RATE:-8}"
STAGE_TIME="${STAGE_TIME:-50s}" UNLABELLED_KNOWN="${UNLABELLED_KNOWN:-0.7}"
OUT="${DEMO_OUT:-$ROOT/results/demo}"
mkdir -p "$OUT"
require_av_digits
START="${START:-$(bash "$ROOT/scripts/demo-model.sh" --path)}"
[ -f "$START" ] || { echo "no starting model at $START: run make setup (it trains one, scripts/demo-model.sh)" >&2; exit 1; }
read -r PORT MPORT < <(free_ports 2)
BROKERS="127.0.0.1:$PORT"
say() { printf '\n== %s\n' "$*"; }
started_at=$SECONDS

say "starting tansu on $BROKERS"
start_tansu "$PORT"

demo_config "$WORK/demo.toml" <<TOML
[kafka]
brokers = "$BROKERS"
[source]
file_roots = ["$(readlink -f "$SET")"]
[metrics]
listen = "127.0.0.1:$MPORT"
[checkpoint]
start = "$(readlink -f "$START")"
TOML

say "starting the daemon from a model that knows the digits 0-4 and has never seen 5-9"
start_daemon "$WORK/demo.toml" "$OUT/daemon.log" --run-for 30m
daemon=$DAEMON_PID
wait_ready "$MPORT"

say "streaming $TRAIN_CLIPS clips on 4 streams at $RATE/s: 0-4, $UNLABELLED_KNOWN of them unlabelled; 5-9 unlabelled, arriving 5,6 then 7,8 then 9 every $STAGE_TIME"
"$BIN" produce --brokers "$BROKERS" --manifest "$SET/manifest.json" --split train --known 0-4 \
  --unlabelled-known-fraction "$UNLABELLED_KNOWN" --novel-stages 5,6:7,8:9 --stage-time "$STAGE_TIME" \
  --streams 4 --rate "$RATE" --limit "$TRAIN_CLIPS" >"$WORK/train-sent.txt"
say "streaming $TEST_CLIPS test clips (MNIST test images, voices never heard), all ten digits"
"$BIN" produce --brokers "$BROKERS" --manifest "$SET/manifest.json" --split test --known 0-4 \
  --unlabelled-known-fraction "$UNLABELLED_KNOWN" --streams 4 --rate "$RATE" --limit "$TEST_CLIPS" --seed 1 \
  >"$WORK/test-sent.txt"
say "and one segment of random bytes: it becomes a dead letter, and nothing else stops"
head -c 40000 /dev/urandom >"$WORK/corrupt.ts"
"$BIN" produce --brokers "$BROKERS" --stream-id av-0 --inline "$WORK/corrupt.ts" >/dev/null

say "what the daemon published"
"$BIN" summary --brokers "$BROKERS" --expect "$((TRAIN_CLIPS + TEST_CLIPS))" --timeout 5m | head -12

say "accuracy on the test clips' unlabelled windows against their truth (which the daemon never saw)"
"$BIN" score --brokers "$BROKERS" --truth "$SET/manifest.json" --split test --segments "$WORK/test-sent.txt" \
  --expect "$((TRAIN_CLIPS + TEST_CLIPS))" --slices 4 --out "$OUT/score.json" --svg "$OUT/accuracy.svg" |
  tee "$OUT/summary.txt"

metrics=$(curl -sf "http://127.0.0.1:$MPORT/metrics" || true)
estimated=$(awk '$1 == "novelstream_novel_clusters_estimated" {print $2}' <<<"$metrics")
say "new digits: estimated ${estimated:-?}, truth 5 (5, 6, 7, 8, 9)" | tee -a "$OUT/summary.txt"
grep -E '^novelstream_(windows_published_total|dead_letters_total|model_version|train_steps_total) ' <<<"$metrics" || true

say "stopping the daemon (SIGTERM drains in-flight work, checkpoints, commits)"
kill -TERM "$daemon"
wait "$daemon"

say "the report: each discovered category with its exemplar frames and audio, accuracy over time"
"$BIN" report --config "$WORK/demo.toml" --truth "$SET/manifest.json" --split test --out "$OUT/report.html" >/dev/null
echo "report: $OUT/report.html"
echo "the demo took $((SECONDS - started_at)) s"
