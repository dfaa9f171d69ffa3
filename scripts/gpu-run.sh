#!/usr/bin/env bash
# The GPU numbers of issue 22 on a machine with nothing of this project but the bundle
# scripts/gpu-bundle.sh made, PyTorch 2.11.0 (whose torch/lib the daemon links) and python3:
# `bench assign` and `bench train` (with the same step in PyTorch eager, and its bf16 and
# channels-last variants), decode alone against decode + assign on the same clips, and the
# largest number of 25 fps 112x112 streams served in real time with p99 latency under 2 s while
# the daemon trains. `model.device = "auto"` falls back to the CPU where there is no GPU.
#   scripts/gpu-run.sh BUNDLE OUT     (BUNDLE: the folder gpu-bundle.sh wrote, or its archive)
#   env: PYTHON=/opt/torch/.venv/bin/python3 TORCH_LIB=(PYTHON's torch/lib) DEVICE=auto
#        STEPS=50 ASSIGN_BATCH=1,8,32,64,256 ASSIGN_BATCHES=30 DECODERS=(cores/2, at least 2)
#        BACKLOG_CLIPS=4000 COUNTS="32 64 128 256 512 1024" SECONDS_EACH=30 BUDGET_S=450
#        SEND=auto|file|inline (segments as file:// references, or their bytes in the message)
# Stream counts are tried in order until one is not served or BUDGET_S (seconds since the start)
# would be passed. Writes OUT/summary.md, OUT/capacity.tsv, OUT/log.txt (all it printed) and
# OUT/details.tar.gz (each step's output, daemon logs, score reports, the libraries loaded).
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
OUT="$(mkdir -p "$2" && cd "$2" && pwd)"
# Everything printed also goes to OUT/log.txt (a pipe from this same script: lib.sh's cleanup
# waits for every child, which a `tee` process substitution would never let it finish).
if [ -z "${GPU_RUN_LOGGING:-}" ]; then
  GPU_RUN_LOGGING=1 bash "$0" "$@" 2>&1 | tee "$OUT/log.txt"
  exit "${PIPESTATUS[0]}"
fi
START=$(date +%s)
WORK=$(mktemp -d /tmp/novelstream-gpu.XXXXXX)
source "$(dirname "$0")/lib.sh"
DETAILS="$WORK/details"
mkdir -p "$DETAILS"
DEVICE="${DEVICE:-auto}" STEPS="${STEPS:-50}" ASSIGN_BATCH="${ASSIGN_BATCH:-1,8,32,64,256}"
ASSIGN_BATCHES="${ASSIGN_BATCHES:-30}" BACKLOG_CLIPS="${BACKLOG_CLIPS:-4000}"
COUNTS="${COUNTS:-32 64 128 256 512 1024}" SECONDS_EACH="${SECONDS_EACH:-30}" BUDGET_S="${BUDGET_S:-450}"
DECODERS="${DECODERS:-$(( $(nproc) / 2 > 2 ? $(nproc) / 2 : 2 ))}" SEND="${SEND:-auto}"
RESULTS="$ROOT/scripts/gpu/results.py"
say() { printf '\n== %s (%ds)\n' "$*" "$(($(date +%s) - START))"; }
note() { printf '%s\n' "$*" >>"$OUT/summary.md"; }
: >"$OUT/summary.md"
# On any exit: the step times into the summary, everything started stopped, the details packed.
finish() {
  note
  note "## Time of each step"
  note
  cat "$DETAILS/timings.txt" >>"$OUT/summary.md" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  tar -czf "$OUT/details.tar.gz" -C "$WORK" details 2>/dev/null || true
  cleanup
}
trap finish EXIT
trap 'exit 143' TERM INT

say "unpacking $1"
archive="$1"
[ -d "$archive" ] && archive="$1/novelstream-gpu.tar.xz"
# xz may be missing from a minimal image; Python's tarfile reads .tar.xz too.
tar -xJf "$archive" -C "$WORK" 2>/dev/null || python3 -m tarfile -e "$archive" "$WORK"
B="$WORK/novelstream-gpu"
cat "$B/BUILD-INFO"

PYTHON="${PYTHON:-/opt/torch/.venv/bin/python3}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3 || echo python3)"
torch_python=false
"$PYTHON" -c 'import torch' 2>/dev/null && torch_python=true
if [ -z "${TORCH_LIB:-}" ] && $torch_python; then
  TORCH_LIB="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
fi
TORCH_LIB="${TORCH_LIB:-/opt/torch/.venv/lib/python3.12/site-packages/torch/lib}"
[ -f "$TORCH_LIB/libtorch_cpu.so" ] ||
  { echo "no libtorch_cpu.so in TORCH_LIB=$TORCH_LIB: set TORCH_LIB to torch 2.11.0's torch/lib" >&2; exit 1; }
# The bundle's libraries first (FFmpeg 5.1, TCMalloc, OpenSSL), then libtorch; its CUDA
# libraries are found through libtorch's own RPATH ($ORIGIN/../../nvidia/...). `bench decode`
# runs `ffmpeg` from PATH.
mkdir -p "$B/bin"
for tool in novelstream ffmpeg; do
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH="%s"\nexec "%s" "$@"\n' "$B/lib:$TORCH_LIB" "$B/libexec/$tool" >"$B/bin/$tool"
  chmod +x "$B/bin/$tool"
done
BIN="$B/bin/novelstream" TANSU="$B/libexec/tansu" PATH="$B/bin:$PATH"

# http_get PORT PATH: the body of a 200 answer from 127.0.0.1:PORT, through bash's /dev/tcp (the
# GPU machine may have no curl); fails on any other answer.
http_get() {
  local reply
  reply="$({ exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 && cat <&3; } 2>/dev/null)" ||
    return 1
  [[ $reply == "HTTP/1.1 200"* ]] || return 1
  printf '%s\n' "${reply#*$'\r\n\r\n'}"
}
# wait_up PORT: waits up to 60 s for the daemon's /readyz (starting CUDA takes a while).
wait_up() {
  for _ in $(seq 300); do http_get "$1" /readyz >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "the daemon is not ready on port $1 after 60 s; going on" >&2
}
# timed NAME COMMAND...: runs COMMAND, its output shown and kept as details/NAME.txt, and records
# its wall time; a failure is recorded, not fatal, so the other numbers still come back.
timed() {
  local name=$1 t0 rc=0
  shift
  say "$name"
  t0=$(date +%s%N)
  "$@" > >(tee "$DETAILS/$name.txt") 2>&1 || rc=$?
  sleep 0.2
  printf -- '- %s: %d s%s\n' "$name" $((($(date +%s%N) - t0 + 500000000) / 1000000000)) \
    "$([ $rc = 0 ] || echo ", FAILED (exit $rc)")" >>"$DETAILS/timings.txt"
  return 0
}
# stop PID: SIGTERM, then SIGKILL after 5 s (a daemon left behind would drain for 30 s).
stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# loaded PID NAME: the shared libraries process PID has mapped, kept as details/libs-NAME.txt;
# says whether every FFmpeg library came from the bundle.
loaded() {
  awk '$6 ~ /\.so/ {print $6}' "/proc/$1/maps" | sort -u >"$DETAILS/libs-$2.txt"
  local ffmpeg
  ffmpeg=$(grep -E '/lib(av|sw)[a-z]*\.so' "$DETAILS/libs-$2.txt" || true)
  if [ -n "$ffmpeg" ] && ! grep -v "^$B/lib/" <<<"$ffmpeg"; then
    echo "$2: all $(wc -l <<<"$ffmpeg") FFmpeg libraries mapped are the bundle's; libtorch:" \
      "$(grep -m1 'libtorch_cpu' "$DETAILS/libs-$2.txt" || echo none)"
  else
    echo "$2: FFmpeg libraries mapped from outside the bundle (above)"
  fi
  grep -E 'libtorch_cuda|libcudart|libcudnn\.' "$DETAILS/libs-$2.txt" | sed 's/^/  /' || echo "  no CUDA library mapped"
}
# daemon_toml FILE BROKERS MPORT ONLINE: the daemon's config for the end-to-end runs (the model
# of scripts/stream-capacity.sh: digits 0-4 known, 5 novel clusters, both modalities).
daemon_toml() {
  {
    cat <<TOML
[kafka]
brokers = "$2"
topic_partitions = 4
topic_replication_factor = 1
[source]
file_roots = ["$B/clips"]
[pipeline]
decode_workers = $DECODERS
[online]
enabled = $4
# How fast the machine trains, not the default pacing by the stream.
steps_per_window = 0
[metrics]
listen = "127.0.0.1:$3"
TOML
    bench_model "$DEVICE"
  } >"$1"
}
# Without openat2 (gVisor may lack it) the daemon cannot open file:// segments: with SEND=auto
# they are then sent inline.
INLINE=()
case "$SEND" in
  inline) INLINE=(--inline) ;;
  auto) python3 -c 'import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); how = (ctypes.c_uint64 * 3)(os.O_PATH, 0, 0)
sys.exit(libc.syscall(437, -100, b"/", how, 24) < 0 and ctypes.get_errno() == 38)' || INLINE=(--inline) ;;
esac

say "machine"
{
  echo "$(date -u +%FT%TZ); kernel $(uname -r); $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  if command -v nvidia-smi >/dev/null; then
    echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
  else
    echo "GPU: none (no nvidia-smi)"
  fi
  version=$(sed -n "s/^__version__ = ['\"]\(.*\)['\"]/\1/p" "$TORCH_LIB/../version.py" 2>/dev/null || true)
  echo "libtorch: $TORCH_LIB (${version:-no version.py beside it})"
  if $torch_python; then
    echo "PyTorch: $PYTHON: $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA available:", torch.cuda.is_available())')"
  else
    echo "PyTorch: none ($PYTHON has no torch): the PyTorch eager comparison is skipped"
  fi
  echo "decoders: $DECODERS; segments sent ${INLINE[*]:-by file:// reference}"
} | tee "$DETAILS/machine.txt"
note "# GPU run of $(head -1 "$B/BUILD-INFO")"
note
sed 's/^/    /' "$DETAILS/machine.txt" >>"$OUT/summary.md"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$DETAILS/gpu-utilization.csv" 2>&1 &
  started $!
fi

bench_model "$DEVICE" >"$WORK/model.toml"
timed bench-assign "$BIN" bench assign --config "$WORK/model.toml" --batch "$ASSIGN_BATCH" --batches "$ASSIGN_BATCHES"
timed bench-train "$BIN" bench train --config "$WORK/model.toml" --steps "$STEPS" --warmup 3
device=$(grep -oE 'using (CUDA|CPU).*' "$DETAILS/bench-assign.txt" | head -1 || true)
note
note "Device chosen by \`model.device = \"$DEVICE\"\`: ${device:-unknown (see bench-assign.txt)}"
if command -v nvidia-smi >/dev/null && [[ $device != *CUDA* ]]; then
  note
  note "**WARNING: this machine has a GPU, but the daemon did not use it** (the reason is in the line above)."
fi
note
note "## Assignment (\`bench assign\`, the model of scripts/bench.sh)"
note
grep -vE ' (INFO|WARN) ' "$DETAILS/bench-assign.txt" >>"$OUT/summary.md" || true
note
note "## Training step"
note
grep -vE ' (INFO|WARN) ' "$DETAILS/bench-train.txt" | sed 's/^/    /' >>"$OUT/summary.md" || true
if $torch_python; then
  torch_device=cpu
  [ "$DEVICE" != cpu ] && "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' && torch_device=cuda
  threads="$("$PYTHON" -c 'import torch; print(torch.get_num_threads())')"
  timed pytorch-eager "$PYTHON" "$ROOT/bench/train_step.py" --device "$torch_device" --threads "$threads" --steps "$STEPS"
  sed 's/^/    /' "$DETAILS/pytorch-eager.txt" >>"$OUT/summary.md"
  python3 "$RESULTS" train "$DETAILS/bench-train.txt" "$DETAILS/pytorch-eager.txt" >>"$OUT/summary.md"
  if [ "$torch_device" = cuda ]; then
    timed pytorch-variants "$PYTHON" "$ROOT/scripts/gpu/train_step_variants.py" --device cuda --steps "$STEPS"
    note
    note "What bf16 autocast and channels-last buy the same step in PyTorch eager (\`novelstream bench train\` has neither):"
    note
    grep '^|' "$DETAILS/pytorch-variants.txt" >>"$OUT/summary.md" || true
  fi
else
  python3 "$RESULTS" train "$DETAILS/bench-train.txt" >>"$OUT/summary.md"
fi

# Decode alone: the product's decoder against the bundled ffmpeg CLI, one thread each, on 60 s of
# the clips stream-copied into one file, and on one 2 s clip (each segment's open included).
timed bench-decode-60s "$BIN" bench decode "$B/bench/av-digits-112x25-60s.mp4" --repeat 3
timed bench-decode-2s "$BIN" bench decode "$B/bench/av-digits-112x25-2s.mp4" --repeat 20
note
note "## Decode alone and decode + assign (112x112 25 fps clips to the daemon's default 4 frames of 64x64)"
note
for clip in 60s 2s; do
  note "\`bench decode\` of the $clip clip, one thread each (the CLI is the bundle's ffmpeg, same libraries):"
  note
  grep -E '^\||^ratio' "$DETAILS/bench-decode-$clip.txt" >>"$OUT/summary.md" || true
  note
done

# Decode + assign: a backlog on the input topic before the daemon starts, training off.
backlog() {
  local port mport manifest clips=$BACKLOG_CLIPS
  read -r port mport < <(free_ports 2)
  start_tansu "$port"
  manifest=$(python3 "$RESULTS" replicate "$B/clips" "$clips")
  "$BIN" produce --brokers "127.0.0.1:$port" --partitions 4 --manifest "$manifest" --split train --known 0-4 \
    --streams 16 --batch 64 --limit "$clips" "${INLINE[@]}" >"$WORK/backlog-sent.txt"
  echo "backlog of $(wc -l <"$WORK/backlog-sent.txt") segments published"
  daemon_toml "$WORK/backlog.toml" "127.0.0.1:$port" "$mport" false
  start_daemon "$WORK/backlog.toml" "$DETAILS/daemon-backlog.log"
  local daemon=$DAEMON_PID
  wait_up "$mport"
  # When the first window, 10%, 90% and all of them were published (polled every 0.1 s, up to 3 min).
  local expected=$((clips * 2)) published times=()
  local marks=(1 $((expected / 10)) $((expected * 9 / 10)) "$expected")
  for _ in $(seq 1800); do
    published=$(http_get "$mport" /metrics | awk '/^novelstream_windows_published_total / {printf "%d", $2}')
    while [ ${#times[@]} -lt 4 ] && [ "${published:-0}" -ge "${marks[${#times[@]}]}" ]; do
      times+=("$(date +%s.%N)")
    done
    [ ${#times[@]} -lt 4 ] || break
    sleep 0.1
  done
  "$BIN" score --brokers "127.0.0.1:$port" --truth "$manifest" --segments "$WORK/backlog-sent.txt" \
    --expect "$expected" --timeout 30s --out "$DETAILS/score-backlog.json" --svg "$WORK/backlog.svg" |
    grep -E 'windows|latency|missing' || true
  http_get "$mport" /metrics >"$DETAILS/metrics-backlog.txt" || true
  loaded "$daemon" daemon-backlog
  stop "$daemon"
  stop "$TANSU_PID"
  python3 "$RESULTS" backlog "$DETAILS/score-backlog.json" "$DETAILS/metrics-backlog.txt" "$DECODERS" \
    "$DETAILS/bench-decode-2s.txt" "${times[@]}" | tee "$DETAILS/backlog-summary.md"
}
timed decode-assign-backlog backlog
cat "$DETAILS/backlog-summary.md" >>"$OUT/summary.md" 2>/dev/null || true

# level N: N streams, each one 2 s clip every 2 s, for SECONDS_EACH while the daemon trains;
# appends its row to OUT/capacity.tsv.
level() {
  local n=$1 port mport manifest rate clips batch daemon t0 t1
  read -r port mport < <(free_ports 2)
  start_tansu "$port"
  daemon_toml "$WORK/daemon-$n.toml" "127.0.0.1:$port" "$mport" true
  start_daemon "$WORK/daemon-$n.toml" "$DETAILS/daemon-$n.log"
  daemon=$DAEMON_PID
  wait_up "$mport"
  rate=$(python3 -c "print($n / 2)")
  clips=$(python3 -c "import math; print(math.ceil($n / 2 * $SECONDS_EACH))")
  # Acknowledgements are awaited once per batch: one per segment would cap the rate near 1/linger.
  batch=$(python3 -c "import math; print(max(1, math.ceil($n / 2 / 16)))")
  manifest=$(python3 "$RESULTS" replicate "$B/clips" "$clips")
  http_get "$mport" /metrics >"$WORK/metrics-$n-before.txt" || true
  echo "$n streams: $clips clips of 2 s at $rate/s (batches of $batch), digits 0-4 labelled"
  t0=$(date +%s.%N)
  "$BIN" produce --brokers "127.0.0.1:$port" --manifest "$manifest" --split train --known 0-4 \
    --streams "$n" --rate "$rate" --batch "$batch" --limit "$clips" "${INLINE[@]}" >"$WORK/sent-$n.txt"
  t1=$(date +%s.%N)
  http_get "$mport" /metrics >"$WORK/metrics-$n-after.txt" || true
  "$BIN" score --brokers "127.0.0.1:$port" --truth "$manifest" --segments "$WORK/sent-$n.txt" \
    --expect "$((clips * 2))" --timeout 60s --out "$DETAILS/score-$n.json" --svg "$WORK/accuracy-$n.svg" |
    grep -E 'windows|latency|missing' || true
  http_get "$mport" /metrics >"$DETAILS/metrics-$n.txt" || true
  loaded "$daemon" "daemon-$n" >/dev/null
  python3 "$RESULTS" level "$DETAILS/score-$n.json" "$n" "$(python3 -c "print($t1 - $t0)")" \
    "$(python3 -c "print($clips / $rate)")" "$WORK/metrics-$n-before.txt" "$WORK/metrics-$n-after.txt" \
    "$(awk '{print ($14 + $15) / 100}' "/proc/$daemon/stat")" >>"$OUT/capacity.tsv"
  stop "$daemon"
  stop "$TANSU_PID"
  tail -1 "$OUT/capacity.tsv"
}
printf '%s\n' "streams windows p50_ms p95_ms p99_ms max_ms missing_segments produce_s nominal_s train_steps train_steps_per_s ms_per_step daemon_cpu_s served" |
  tr ' ' '\t' >"$OUT/capacity.tsv"
for n in $COUNTS; do
  if [ $(($(date +%s) - START + SECONDS_EACH + 45)) -gt "$BUDGET_S" ]; then
    echo "skipping $n streams and more: past BUDGET_S=$BUDGET_S" | tee -a "$DETAILS/timings.txt"
    break
  fi
  timed "streams-$n" level "$n"
  [ "$(tail -1 "$OUT/capacity.tsv" | cut -f14)" = yes ] || break
done
note
note "## End to end: 25 fps 112x112 streams in real time while training ($SECONDS_EACH s each, $DECODERS decoders)"
note
python3 "$RESULTS" capacity "$OUT/capacity.tsv" | tee -a "$OUT/summary.md"
say "done: $OUT"
