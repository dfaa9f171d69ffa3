#!/usr/bin/env bash
# Online discovery measured end to end: streams the av-digits training clips through a local
# tansu broker into the daemon — known classes 0-4, of whose clips UNLABELLED_KNOWN are sent
# without their label; novel classes 5-9 unlabelled, entering in STAGES — interleaved over
# STREAMS streams at RATE segments per second for at most MINUTES, then scores what the daemon
# published (`novelstream score`: All / Old / New overall, per stage and per time slice, each
# novel class's time to a cluster of its own) and records its resident memory over time.
#   scripts/online-av.sh [OUT]        (default OUT: results/online-av)
#   env: MINUTES=30 RATE=2 STREAMS=8 DEVICE=auto
#        UNLABELLED_KNOWN=0.7 STAGES=5,6:7,8:9 (empty: every novel class from the start)
#        STAGE_TIME (default: MINUTES split evenly over the stages) NOVEL_CLUSTERS=auto
#        MODALITY= visual | audio | both (default: config/av-digits.toml's, both)
#        CONTRAST= train.contrast, MODALITY_DROPOUT= train.modality_dropout: for both modalities
#        (the default) within and 0.5, the best measured on the training languages (README,
#        "Which configuration the scripts use"); empty: the config's (both, 0)
#        ASSIGN_WITH= model.assign_with (default: the config's, auto)
#        ESTIMATE_TOLERANCE= train.clusters.estimate_tolerance (default: the config's, 0.02)
#        KNOWN_RECALL= model.known_recall (default: the config's)
#        AMBIGUOUS= train.clusters.ambiguous (default: the config's, novel)
#        STEPS_PER_WINDOW= online.steps_per_window (default: the config's)
#        PUBLISH= online.publish: momentum | online (default: the config's, momentum)
#        START= a checkpoint to start from (checkpoint.start; e.g. the known-only one of
#        `eval --known-only --save-checkpoint`); empty: untrained start
#        ENCODER= a TorchScript visual encoder (model.visual_encoder = "torchscript:…", e.g. one
#        `novelstream export-encoder` wrote), reading the 32x32 frames as they are (mean 0, std
#        1); ENCODER_TRAINING=frozen (or last-block with FINE_TUNE_PREFIX=…, or full)
#        ROLES=all (one process) or ROLES=split: one `--role train` (its log OUT/daemon.log, its
#        metrics in OUT/metrics.txt) and ASSIGNERS=2 `--role assign` (OUT/assign-N.log)
# Writes OUT/score.json, OUT/predictions.csv (every window's decision and truth: scripts/results_table.py
# online OUT), OUT/accuracy.svg, OUT/metrics.txt, OUT/rss.tsv and OUT/summary.txt.
set -euo pipefail
if [ "${MODALITY:-both}" = both ]; then
  CONTRAST="${CONTRAST-within}" MODALITY_DROPOUT="${MODALITY_DROPOUT-0.5}"
fi
WORK=$(mktemp -d /tmp/novelstream-online.XXXXXX)
source "$(dirname "$0")/lib.sh"
OUT="$(mkdir -p "${1:-$ROOT/results/online-av}" && cd "${1:-$ROOT/results/online-av}" && pwd)"
MINUTES="${MINUTES:-30}" RATE="${RATE:-2}" STREAMS="${STREAMS:-8}" DEVICE="${DEVICE:-auto}"
ROLES="${ROLES:-all}" ASSIGNERS="${ASSIGNERS:-2}"
UNLABELLED_KNOWN="${UNLABELLED_KNOWN:-0.7}" STAGES="${STAGES-5,6:7,8:9}" NOVEL_CLUSTERS="${NOVEL_CLUSTERS:-auto}"
stage_count=$(awk -F: '{print NF}' <<<"${STAGES:-x}")
STAGE_TIME="${STAGE_TIME:-$(python3 -c "print(int($MINUTES * 60 / $stage_count))")s}"
staged=() stage_time=()
[ -z "$STAGES" ] || staged=(--novel-stages "$STAGES") stage_time=(--stage-time "$STAGE_TIME")
require_av_digits
read -r PORT MPORT < <(free_ports 2)
BROKERS="127.0.0.1:$PORT"
start_tansu "$PORT"

daemon_config "$WORK/online.toml" <<TOML
[kafka]
brokers = "$BROKERS"
input_topic = "online.segments"
output_topic = "online.assignments"
dead_letter_topic = "online.dead-letters"
clusters_topic = "online.clusters"
[source]
file_roots = ["$(readlink -f "$SET")"]
[model]
device = "$DEVICE"
novel_clusters = $([ "$NOVEL_CLUSTERS" = auto ] && echo '"auto"' || echo "$NOVEL_CLUSTERS")
${MODALITY:+modality = \"$MODALITY\"}
${KNOWN_RECALL:+known_recall = $KNOWN_RECALL}
${ASSIGN_WITH:+assign_with = \"$ASSIGN_WITH\"}
[train]
${CONTRAST:+contrast = \"$CONTRAST\"}
${MODALITY_DROPOUT:+modality_dropout = $MODALITY_DROPOUT}
[train.clusters]
${ESTIMATE_TOLERANCE:+estimate_tolerance = $ESTIMATE_TOLERANCE}
${AMBIGUOUS:+ambiguous = \"$AMBIGUOUS\"}
[online]
${STEPS_PER_WINDOW:+steps_per_window = $STEPS_PER_WINDOW}
${PUBLISH:+publish = \"$PUBLISH\"}
[metrics]
listen = "127.0.0.1:$MPORT"
[checkpoint]
start = "${START:+$(readlink -f "$START")}"
TOML
if [ -n "${ENCODER:-}" ]; then
  python3 "$ROOT/scripts/toml_merge.py" "$WORK/online.toml" - >"$WORK/encoder.toml" <<TOML
[model]
visual_encoder = "torchscript:$(readlink -f "$ENCODER")"
encoder_training = "${ENCODER_TRAINING:-frozen}"
fine_tune_prefix = [${FINE_TUNE_PREFIX:+\"$FINE_TUNE_PREFIX\"}]
[model.visual_input]
size = [32, 32]
TOML
  mv "$WORK/encoder.toml" "$WORK/online.toml"
fi

clips=$(train_clips "$SET/manifest.json" "$MINUTES * 60 * $RATE")
run_for=$(python3 -c "print(int($MINUTES * 60) + 300)")
daemons=()
if [ "$ROLES" = split ]; then
  start_daemon "$WORK/online.toml" "$OUT/daemon.log" --run-for "${run_for}s" --role train
  daemon=$DAEMON_PID
  daemons+=("$DAEMON_PID")
  wait_ready "$MPORT"
  read -r -a APORTS < <(free_ports "$ASSIGNERS")
  for i in $(seq 0 $((ASSIGNERS - 1))); do
    sed "s/127.0.0.1:$MPORT/127.0.0.1:${APORTS[$i]}/" "$WORK/online.toml" >"$WORK/assign-$i.toml"
    start_daemon "$WORK/assign-$i.toml" "$OUT/assign-$i.log" --run-for "${run_for}s" --role assign
    daemons+=("$DAEMON_PID")
  done
  for i in $(seq 0 $((ASSIGNERS - 1))); do wait_ready "${APORTS[$i]}"; done
  versions_line="published a model version"
else
  start_daemon "$WORK/online.toml" "$OUT/daemon.log" --run-for "${run_for}s"
  daemon=$DAEMON_PID
  daemons+=("$DAEMON_PID")
  wait_ready "$MPORT"
  versions_line="assigning with a new model version"
fi

# Resident memory of the daemon every 30 s while streaming.
printf 'seconds\trss_kib\n' >"$OUT/rss.tsv"
(start=$SECONDS; while kill -0 "$daemon" 2>/dev/null; do
   printf '%s\t%s\n' "$((SECONDS - start))" "$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status" 2>/dev/null)" >>"$OUT/rss.tsv"
   sleep 30; done) &
started $!

echo "start: ${START:-untrained}; modality: ${MODALITY:-as config/av-digits.toml}; estimate tolerance: ${ESTIMATE_TOLERANCE:-as the config}; contrast: ${CONTRAST:-as the config}; modality dropout: ${MODALITY_DROPOUT:-as the config}; assign with: ${ASSIGN_WITH:-as the config}; publish: ${PUBLISH:-as the config}"
echo "streaming $clips clips on $STREAMS streams at $RATE/s (known 0-4, $UNLABELLED_KNOWN of them unlabelled;" \
  "novel stages '${STAGES}' of $STAGE_TIME each)"
"$BIN" produce --brokers "$BROKERS" --topic online.segments --manifest "$SET/manifest.json" --split train \
  --known 0-4 --unlabelled-known-fraction "$UNLABELLED_KNOWN" "${staged[@]}" "${stage_time[@]}" \
  --streams "$STREAMS" --rate "$RATE" --limit "$clips" >"$WORK/sent.txt"
"$BIN" score --brokers "$BROKERS" --topic online.assignments --input-topic online.segments --truth "$SET/manifest.json" --segments "$WORK/sent.txt" \
  "${staged[@]}" --expect "$clips" --timeout 10m --slices 10 --out "$OUT/score.json" --svg "$OUT/accuracy.svg" --predictions "$OUT/predictions.csv" |
  tee "$OUT/summary.txt"
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$OUT/metrics.txt" || true
grep -E '^novelstream_(model_version|train_steps_total|cluster_changed_fraction|replay_kept_fraction|novel_clusters_estimated|train_skipped_windows_total|consumer_lag_messages) ' \
  "$OUT/metrics.txt" | tee -a "$OUT/summary.txt" || true
# Stability of the published ids: the replay windows whose published decision changed at each of
# the last 10 versions; at least 1 minus their sum kept their decision through all 10 (the exact
# share is novelstream_replay_kept_fraction, above).
grep -a "$versions_line" "$OUT/daemon.log" | sed -n 's/.*changed_fraction=\([0-9.e-]*\).*/\1/p' |
  tail -n 10 | python3 -c "import sys; f = [float(x) for x in sys.stdin]; print(f'replay windows whose published decision changed, last {len(f)} versions: ' + ' '.join(f'{x:.3f}' for x in f) + f'; at least {max(0.0, 100 * (1 - sum(f))):.1f}% kept it through all of them')" |
  tee -a "$OUT/summary.txt" || true
kill -TERM "${daemons[@]}"
wait "${daemons[@]}" || true
