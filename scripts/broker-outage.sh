#!/usr/bin/env bash
# Broker outages measured: streams CLIPS av-digits clips into the daemon through a tansu broker
# that clients reach only through a TCP proxy (scripts/outage_proxy.py); OUTAGES times
# mid-stream the proxy cuts every connection and refuses new ones for OUTAGE seconds, then lets
# clients back. Then `novelstream score` checks that every window of every segment was published
# at least once, and the daemon's outage metrics and log lines are kept.
# (A broker process restart needs durable storage: tansu's in-memory engine loses the topics,
# and its SQLite engine fails on consumer-group updates, so the outage is made in the network.)
#   scripts/broker-outage.sh [OUT]    (default OUT: results/broker-outage)
#   env: CLIPS=1000 RATE=10 OUTAGES=2 OUTAGE=15
# Writes OUT/outages.txt, OUT/score.json, OUT/metrics.txt and OUT/summary.txt; exits 1 if a
# window is missing.
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-broker.XXXXXX)
source "$(dirname "$0")/lib.sh"
OUT="$(mkdir -p "${1:-$ROOT/results/broker-outage}" && cd "${1:-$ROOT/results/broker-outage}" && pwd)"
CLIPS="${CLIPS:-1000}" RATE="${RATE:-10}" OUTAGES="${OUTAGES:-2}" OUTAGE="${OUTAGE:-15}"
require_av_digits
read -r PORT PROXY MPORT < <(free_ports 3)
BROKERS="127.0.0.1:$PROXY"
python3 "$ROOT/scripts/outage_proxy.py" "$PROXY" "$PORT" >"$WORK/proxy.log" 2>&1 &
proxy=$!
started $proxy
start_tansu "$PORT" "$PROXY"

daemon_config "$WORK/daemon.toml" <<TOML
[kafka]
brokers = "$BROKERS"
input_topic = "outage.segments"
output_topic = "outage.assignments"
dead_letter_topic = "outage.dead-letters"
clusters_topic = "outage.clusters"
group_id = "outage-daemon"
[source]
file_roots = ["$(readlink -f "$SET")"]
[metrics]
listen = "127.0.0.1:$MPORT"
TOML

start_daemon "$WORK/daemon.toml" "$OUT/daemon.log"
daemon=$DAEMON_PID
wait_ready "$MPORT"

echo "streaming $CLIPS clips at $RATE/s; the broker goes away $OUTAGES times for ${OUTAGE}s"
"$BIN" produce --brokers "$BROKERS" --topic outage.segments --manifest "$SET/manifest.json" --split train \
  --known 0-4 --streams 8 --rate "$RATE" --limit "$CLIPS" >"$WORK/sent.txt" 2>"$WORK/producer.log" &
producer=$!
started $producer

: >"$OUT/outages.txt"
stream_s=$(python3 -c "print($CLIPS / $RATE)")
gap=$(python3 -c "print(max(5.0, $stream_s / ($OUTAGES + 1) - $OUTAGE))")
for i in $(seq "$OUTAGES"); do
  sleep "$gap"
  kill -USR1 "$proxy"
  echo "outage $i: broker cut off at $(date -u +%T)" | tee -a "$OUT/outages.txt"
  sleep "$OUTAGE"
  curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -E '^novelstream_broker_' | tr '\n' ' ' | sed 's/^/  during: /' | tee -a "$OUT/outages.txt"
  echo | tee -a "$OUT/outages.txt"
  kill -USR2 "$proxy"
  echo "outage $i: broker back at $(date -u +%T)" | tee -a "$OUT/outages.txt"
done
wait "$producer"
sent=$(wc -l <"$WORK/sent.txt")
echo "producer done ($sent clips)"
"$BIN" score --brokers "$BROKERS" --topic outage.assignments --input-topic outage.segments --truth "$SET/manifest.json" \
  --segments "$WORK/sent.txt" --expect "$sent" --timeout 10m --out "$OUT/score.json" --svg "$WORK/accuracy.svg" \
  | tee "$OUT/summary.txt"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$OUT/metrics.txt" || true
grep -E '^novelstream_(broker_|windows_published_total)' "$OUT/metrics.txt" | tee -a "$OUT/summary.txt" || true
grep -aE 'unreachable|reachable again' "$OUT/daemon.log" | tee -a "$OUT/summary.txt" || true
kill -TERM "$daemon"
wait "$daemon" || true
check_complete "$OUT/score.json" "$sent" "$OUTAGES broker outages" | tee -a "$OUT/summary.txt"
