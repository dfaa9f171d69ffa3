#!/usr/bin/env bash
# Crash safety measured: streams CLIPS av-digits clips (one window each) into the daemon while
# killing it with SIGKILL KILLS times at random moments (restarting it each time, from its
# checkpoint and its group's committed offsets), then lets a last daemon finish and checks with
# `novelstream score` that every window of every segment was published at least once.
#   scripts/kill-restart.sh [OUT]     (default OUT: results/kill-restart)
#   env: KILLS=10 CLIPS=2000 RATE=20 (segments per second) SEED=1
#        DELIVERY=at-least-once | exactly-once (then every window must appear exactly once)
#        BROKERS=host:port to use a running broker instead of a tansu started here; exactly-once
#        needs one with Kafka transactions (Apache Kafka, Redpanda), which tansu is not
# Writes OUT/kills.txt, OUT/score.json and OUT/summary.txt; exits 1 if a window is missing.
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-kill.XXXXXX)
source "$(dirname "$0")/lib.sh"
OUT="$(mkdir -p "${1:-$ROOT/results/kill-restart}" && cd "${1:-$ROOT/results/kill-restart}" && pwd)"
KILLS="${KILLS:-10}" CLIPS="${CLIPS:-2000}" RATE="${RATE:-20}" SEED="${SEED:-1}"
require_av_digits
DELIVERY="${DELIVERY:-at-least-once}"
if [ -z "${BROKERS:-}" ]; then
  read -r PORT < <(free_ports 1)
  BROKERS="127.0.0.1:$PORT"
  start_tansu "$PORT"
fi
# Fresh topic names per run, so a long-lived broker's earlier runs do not count.
RUN="kill-$(date +%s)"

daemon_config "$WORK/daemon.toml" <<TOML
[kafka]
brokers = "$BROKERS"
input_topic = "$RUN.segments"
output_topic = "$RUN.assignments"
dead_letter_topic = "$RUN.dead-letters"
clusters_topic = "$RUN.clusters"
group_id = "$RUN-daemon"
delivery = "$DELIVERY"
[source]
file_roots = ["$(readlink -f "$SET")"]
[checkpoint]
path = "$WORK/daemon.ckpt"
interval = "5s"
[metrics]
listen = ""
TOML

# The topics exist before the producer starts (the daemon creates them).
start_daemon "$WORK/daemon.toml" "$OUT/daemon.log"
first=$DAEMON_PID
for _ in $(seq 100); do grep -q "serving with model version" "$OUT/daemon.log" 2>/dev/null && break; sleep 0.2; done

echo "streaming $CLIPS clips at $RATE/s while killing the daemon $KILLS times"
"$BIN" produce --brokers "$BROKERS" --topic $RUN.segments --manifest "$SET/manifest.json" --split train \
  --known 0-4 --streams 8 --rate "$RATE" --limit "$CLIPS" --seed "$SEED" >"$WORK/sent.txt" &
producer=$!
started $producer

: >"$OUT/kills.txt"
pid=$first
# Seeded pauses of 2-10 s before each kill.
pauses=$(python3 -c "import random; r = random.Random($SEED); print(' '.join(f'{r.uniform(2, 10):.1f}' for _ in range($KILLS)))")
i=0
for pause in $pauses; do
  i=$((i + 1))
  sleep "$pause"
  published=$("$BIN" summary --brokers "$BROKERS" --topic $RUN.assignments --dead-letter-topic $RUN.dead-letters \
    --timeout 2s 2>/dev/null | sed -n 's/^\([0-9]*\) window assignments.*/\1/p' | head -1)
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  printf 'kill %d after %ss: %s assignments published so far\n' "$i" "$pause" "${published:-?}" | tee -a "$OUT/kills.txt"
  start_daemon "$WORK/daemon.toml" "$OUT/daemon.log"
  pid=$DAEMON_PID
done
wait "$producer"
sent=$(wc -l <"$WORK/sent.txt")
echo "producer done ($sent clips); letting the last daemon finish"
"$BIN" score --brokers "$BROKERS" --topic $RUN.assignments --input-topic $RUN.segments --truth "$SET/manifest.json" \
  --segments "$WORK/sent.txt" --expect "$sent" --timeout 10m --out "$OUT/score.json" --svg "$WORK/accuracy.svg" \
  | tee "$OUT/summary.txt"
kill -TERM "$pid"
wait "$pid" || true
check_complete "$OUT/score.json" "$sent" "$KILLS SIGKILLs, $DELIVERY" "$([ "$DELIVERY" = exactly-once ] && echo exact)" | tee -a "$OUT/summary.txt"
