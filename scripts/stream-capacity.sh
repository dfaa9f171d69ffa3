#!/usr/bin/env bash
# How many live streams the daemon serves in real time while it trains: for each stream count,
# N streams of 25 fps 112x112 H.264 + AAC clips of 2 s (the av-digits clips rendered at that
# size and rate) are published in real time (each stream one clip every 2 s) for SECONDS, and
# `novelstream score` measures the latency from a segment's publication to its assignments'.
#   scripts/stream-capacity.sh [OUT]   (default OUT: results/stream-capacity)
#   env: COUNTS="8 12 16" SECONDS_EACH=120 DEVICE=auto
#        ROLES=all (one process) or ROLES=split: one `--role train` and ASSIGNERS=2 `--role assign`
# Writes OUT/capacity.tsv (streams, windows, p50/p95/p99/max latency, missing, the trainer's steps,
# CPU seconds of all the daemon's processes).
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-capacity.XXXXXX)
source "$(dirname "$0")/lib.sh"
OUT="$(mkdir -p "${1:-$ROOT/results/stream-capacity}" && cd "${1:-$ROOT/results/stream-capacity}" && pwd)"
COUNTS="${COUNTS:-8 12 16}" SECONDS_EACH="${SECONDS_EACH:-120}" DEVICE="${DEVICE:-auto}"
ROLES="${ROLES:-all}" ASSIGNERS="${ASSIGNERS:-2}"
SET="$CACHE/data/av-digits-112x25-v2"
if [ ! -f "$SET/.complete" ]; then
  echo "building the 112x112, 25 fps clips into $SET"
  "$BIN" dataset av-digits --mnist "$ROOT/data/mnist" --speech "$ROOT/data/spoken-digits" --out "$SET" \
    --size 112 --fps 25 --clip 2s --train-per-class 120 --test-per-class 1
  touch "$SET/.complete"
fi

printf 'streams\twindows\tp50_ms\tp95_ms\tp99_ms\tmax_ms\tmissing_segments\ttrain_steps\tcpu_s\n' >"$OUT/capacity.tsv"
for n in $COUNTS; do
  read -r PORT MPORT < <(free_ports 2)
  read -r -a APORTS < <(free_ports "$ASSIGNERS")
  BROKERS="127.0.0.1:$PORT"
  start_tansu "$PORT"
  config() {
    cat <<TOML
[kafka]
brokers = "$BROKERS"
topic_partitions = 4
topic_replication_factor = 1
[source]
file_roots = ["$(readlink -f "$SET")"]
[online]
# The worst case for the assigners: a trainer that never waits for the stream.
steps_per_window = 0
[metrics]
listen = "127.0.0.1:$1"
TOML
    bench_model "$DEVICE"
  }
  config "$MPORT" >"$WORK/daemon-$n.toml"
  daemons=()
  if [ "$ROLES" = split ]; then
    # The trainer serves the metrics read below (its steps); each assigner its own port.
    start_daemon "$WORK/daemon-$n.toml" "$OUT/trainer-$n.log" --role train
    daemons+=("$DAEMON_PID")
    wait_ready "$MPORT"
    for i in $(seq 0 $((ASSIGNERS - 1))); do
      config "${APORTS[$i]}" >"$WORK/assign-$n-$i.toml"
      start_daemon "$WORK/assign-$n-$i.toml" "$OUT/assign-$n-$i.log" --role assign
      daemons+=("$DAEMON_PID")
    done
    for i in $(seq 0 $((ASSIGNERS - 1))); do wait_ready "${APORTS[$i]}"; done
  else
    start_daemon "$WORK/daemon-$n.toml" "$OUT/daemon-$n.log"
    daemons+=("$DAEMON_PID")
    wait_ready "$MPORT"
  fi
  rate=$(python3 -c "print($n / 2)")
  clips=$(train_clips "$SET/manifest.json" "$n / 2 * $SECONDS_EACH")
  echo "== $n streams: $clips clips of 2 s at $rate/s (real time), digits 0-4 labelled"
  "$BIN" produce --brokers "$BROKERS" --manifest "$SET/manifest.json" --split train --known 0-4 \
    --streams "$n" --rate "$rate" --limit "$clips" >"$WORK/sent-$n.txt"
  "$BIN" score --brokers "$BROKERS" --truth "$SET/manifest.json" --segments "$WORK/sent-$n.txt" \
    --expect "$((clips * 2))" --timeout 5m --out "$OUT/score-$n.json" --svg "$WORK/accuracy-$n.svg" | tee "$OUT/score-$n.txt"
  metrics=$(curl -sf "http://127.0.0.1:$MPORT/metrics" || true)
  steps=$(awk '/^novelstream_train_steps_total / {print $2}' <<<"$metrics")
  cpu=$(for pid in "${daemons[@]}"; do cat "/proc/$pid/stat"; done | awk '{s += ($14 + $15) / 100} END {print s}')
  python3 - "$OUT/score-$n.json" "$n" "${steps:-0}" "$cpu" >>"$OUT/capacity.tsv" <<'PY'
import json, sys
r, n, steps, cpu = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
l = r.get("latency") or {}
print("\t".join(str(x) for x in [n, r["windows"], l.get("p50_ms"), l.get("p95_ms"), l.get("p99_ms"), l.get("max_ms"),
                                 r["missing_segments"], steps, cpu]))
PY
  kill -TERM "${daemons[@]}"
  wait "${daemons[@]}" 2>/dev/null || true
  kill -TERM "$TANSU_PID"
  wait "$TANSU_PID" 2>/dev/null || true
done
column -t "$OUT/capacity.tsv"
