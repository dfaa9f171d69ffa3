#!/usr/bin/env bash
# The local demo: a tansu broker on 127.0.0.1, the audio-visual digit clips (`make setup` built
# them: MNIST digits drifting across the frame while a person says the digit) streamed as 4
# camera streams, the daemon learning online while it assigns every window, then the accuracy
# of what it published and an HTML report. Digits 0-4 arrive labelled (the known classes);
# 5-9 arrive unlabelled and must be discovered. Everything started here is stopped on exit.
#   env: TRAIN_CLIPS=600 TEST_CLIPS=200 RATE=8 (segments per second) DEMO_OUT=results/demo
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-demo.XXXXXX)
source "$(dirname "$0")/lib.sh"
TRAIN_CLIPS="${TRAIN_CLIPS:-600}" TEST_CLIPS="${TEST_CLIPS:-200}" RATE="${RATE:-8}"
OUT="${DEMO_OUT:-$ROOT/results/demo}"
mkdir -p "$OUT"
require_av_digits
read -r PORT MPORT < <(free_ports 2)
BROKERS="127.0.0.1:$PORT"
say() { printf '\n== %s\n' "$*"; }

say "starting tansu on $BROKERS"
start_tansu "$PORT"

daemon_config "$WORK/demo.toml" <<TOML
[kafka]
brokers = "$BROKERS"
[source]
file_roots = ["$(readlink -f "$SET")"]
[metrics]
listen = "127.0.0.1:$MPORT"
TOML

say "starting the daemon: both modalities, training online from untrained weights"
start_daemon "$WORK/demo.toml" "$WORK/daemon.log" --run-for 30m
daemon=$DAEMON_PID
wait_ready "$MPORT"

say "streaming $TRAIN_CLIPS training clips on 4 streams at $RATE/s: digits 0-4 labelled, 5-9 not"
"$BIN" produce --brokers "$BROKERS" --manifest "$SET/manifest.json" --split train --known 0-4 \
  --streams 4 --rate "$RATE" --limit "$TRAIN_CLIPS" >"$WORK/train-sent.txt"
say "streaming $TEST_CLIPS test clips (MNIST test images, voices never heard): again 0-4 labelled, 5-9 not"
"$BIN" produce --brokers "$BROKERS" --manifest "$SET/manifest.json" --split test --known 0-4 \
  --streams 4 --rate "$RATE" --limit "$TEST_CLIPS" --seed 1 >"$WORK/test-sent.txt"
say "and one segment of random bytes: it becomes a dead letter, and nothing else stops"
head -c 40000 /dev/urandom >"$WORK/corrupt.ts"
"$BIN" produce --brokers "$BROKERS" --stream-id av-0 --inline "$WORK/corrupt.ts" >/dev/null

say "what the daemon published"
"$BIN" summary --brokers "$BROKERS" --expect "$((TRAIN_CLIPS + TEST_CLIPS))" --timeout 5m | head -30

say "accuracy on the test clips against their truth (which the daemon never saw)"
"$BIN" score --brokers "$BROKERS" --truth "$SET/manifest.json" --split test --segments "$WORK/test-sent.txt" \
  --expect "$((TRAIN_CLIPS + TEST_CLIPS))" --slices 4 --out "$OUT/score.json" --svg "$OUT/accuracy.svg"

say "a few of the daemon's metrics (http://127.0.0.1:$MPORT/metrics)"
curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -E '^novelstream_(windows_published_total|dead_letters_total|model_version|train_steps_total|cluster_changed_fraction) ' || true

say "stopping the daemon (SIGTERM drains in-flight work, checkpoints, commits)"
kill -TERM "$daemon"
wait "$daemon"
cat "$WORK/daemon.out"

say "the report: clusters with their exemplar frames and audio, accuracy over time"
"$BIN" report --config "$WORK/demo.toml" --truth "$SET/manifest.json" --out "$OUT/report.html"
echo "report: $OUT/report.html"
