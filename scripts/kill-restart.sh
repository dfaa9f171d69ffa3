#!/usr/bin/env bash
# Crash safety measured: CLIPS av-digits clips (one window each) go through the daemon while it is
# killed with SIGKILL KILLS times at seeded random moments (restarted each time, from its
# checkpoint and its group's committed offsets); a last daemon finishes, and `novelstream score`
# checks that every window of every segment was published at least once.
#   scripts/kill-restart.sh [OUT]     (default OUT: results/kill-restart)
#   env: MODE=stream   the clips are streamed at RATE while the daemon is killed (2-10 s apart)
#        MODE=backlog  every clip is on the topic before the first start, written in batches of
#                      BATCH records as ordinary producers write (kills 3-12 s apart)
#        MODE=storm    a backlog read by two daemons in one group, killed and restarted in turn,
#                      so partitions move between them at every kill (kills 3-12 s apart)
#        KILLS=10 CLIPS=2000 RATE=20 (segments per second, stream mode) BATCH=100 SEED=1
#        CHECKPOINT=1 (0: the daemons keep no checkpoint and restart from the initial model)
#        DELIVERY=at-least-once | exactly-once (then every window must appear exactly once)
#        BROKERS=host:port to use a running broker instead of a tansu started here; exactly-once
#        needs one with Kafka transactions (Apache Kafka, Redpanda), which tansu is not
# Writes OUT/kills.txt, OUT/score.json and OUT/summary.txt; exits 1 if a window is missing.
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-kill.XXXXXX)
source "$(dirname "$0")/lib.sh"
OUT="$(mkdir -p "${1:-$ROOT/results/kill-restart}" && cd "${1:-$ROOT/results/kill-restart}" && pwd)"
MODE="${MODE:-stream}" KILLS="${KILLS:-10}" CLIPS="${CLIPS:-2000}" RATE="${RATE:-20}" SEED="${SEED:-1}"
BATCH="${BATCH:-100}" CHECKPOINT="${CHECKPOINT:-1}"
case "$MODE" in stream | backlog | storm) ;; *) echo "MODE must be stream, backlog or storm" >&2; exit 2 ;; esac
require_av_digits
DELIVERY="${DELIVERY:-at-least-once}"
if [ -z "${BROKERS:-}" ]; then
  read -r PORT < <(free_ports 1)
  BROKERS="127.0.0.1:$PORT"
  start_tansu "$PORT"
fi
# Fresh topic names per run, so a long-lived broker's earlier runs do not count.
RUN="kill-$(date +%s)"

# instance_config NAME: the config of daemon NAME (its own checkpoint file, when kept).
instance_config() {
  daemon_config "$WORK/daemon-$1.toml" <<TOML
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
[metrics]
listen = ""
$([ "$CHECKPOINT" = 1 ] && printf '[checkpoint]\npath = "%s"\ninterval = "5s"\n' "$WORK/$1.ckpt")
TOML
}

# produce RATE BATCH: publishes the clips (to $WORK/sent.txt), creating the topic when missing.
produce() {
  "$BIN" produce --brokers "$BROKERS" --topic "$RUN.segments" --partitions 4 --manifest "$SET/manifest.json" \
    --split train --known 0-4 --streams 8 --rate "$1" --batch "$2" --limit "$CLIPS" --seed "$SEED" >"$WORK/sent.txt"
}

declare -A pid
instances=(a)
[ "$MODE" = storm ] && instances=(a b)
for name in "${instances[@]}"; do instance_config "$name"; done
restart() {
  start_daemon "$WORK/daemon-$1.toml" "$OUT/daemon-$1.log"
  pid[$1]=$DAEMON_PID
}

if [ "$MODE" = stream ]; then
  # The topics exist before the producer starts (the daemon creates them).
  restart a
  for _ in $(seq 100); do grep -q "serving with model version" "$OUT/daemon-a.log" 2>/dev/null && break; sleep 0.2; done
  echo "streaming $CLIPS clips at $RATE/s while killing the daemon $KILLS times"
  produce "$RATE" 1 &
  producer=$!
  started $producer
  low=2 high=10
else
  echo "publishing a backlog of $CLIPS clips in batches of $BATCH, then killing ${#instances[@]} daemon(s) $KILLS times"
  produce 0 "$BATCH"
  for name in "${instances[@]}"; do restart "$name"; done
  low=3 high=12
fi

: >"$OUT/kills.txt"
pauses=$(python3 -c "import random; r = random.Random($SEED); print(' '.join(f'{r.uniform($low, $high):.1f}' for _ in range($KILLS)))")
i=0
for pause in $pauses; do
  name=${instances[$((i % ${#instances[@]}))]}
  i=$((i + 1))
  sleep "$pause"
  published=$("$BIN" summary --brokers "$BROKERS" --topic $RUN.assignments --dead-letter-topic $RUN.dead-letters \
    --timeout 2s 2>/dev/null | sed -n 's/^\([0-9]*\) window assignments.*/\1/p' | head -1)
  kill -KILL "${pid[$name]}"
  wait "${pid[$name]}" 2>/dev/null || true
  printf 'kill %d (daemon %s) after %ss: %s assignments published so far\n' "$i" "$name" "$pause" "${published:-?}" |
    tee -a "$OUT/kills.txt"
  restart "$name"
done
[ "$MODE" != stream ] || wait "$producer"
sent=$(wc -l <"$WORK/sent.txt")
echo "$sent clips sent; letting the last daemon(s) finish"
"$BIN" score --brokers "$BROKERS" --topic $RUN.assignments --input-topic $RUN.segments --truth "$SET/manifest.json" \
  --segments "$WORK/sent.txt" --expect "$sent" --timeout "${SCORE_TIMEOUT:-10m}" --out "$OUT/score.json" \
  --svg "$WORK/accuracy.svg" | tee "$OUT/summary.txt"
for name in "${instances[@]}"; do kill -TERM "${pid[$name]}"; done
for name in "${instances[@]}"; do wait "${pid[$name]}" || true; done
rereads=$(cat "$OUT"/daemon-*.log | grep -c "reading the partition again" || true)
gaps=$(cat "$OUT"/daemon-*.log | grep -c "input offsets skipped" || true)
echo "partitions read again from before their committed offset: $rereads; gaps left: $gaps" | tee -a "$OUT/summary.txt"
check_complete "$OUT/score.json" "$sent" "$MODE, $KILLS SIGKILLs, checkpoint $CHECKPOINT, $DELIVERY" \
  "$([ "$DELIVERY" = exactly-once ] && echo exact)" | tee -a "$OUT/summary.txt"
