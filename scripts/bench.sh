#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md on this machine: decoding against the ffmpeg CLI, assignment
# (inference) per batch size, and the training step against the same model and step in PyTorch
# eager (bench/train_step.py, run with the full torch wheel's Python: $NOVELSTREAM_PYTHON, else
# the venv `NOVELSTREAM_TORCH=cuda make setup` makes; skipped without one). Prints the results.
#   scripts/bench.sh            env: REPEAT=3 BATCHES=30 STEPS=20 DEVICE=auto|cpu|cuda
# On a GPU machine: NOVELSTREAM_TORCH=cuda make setup build && DEVICE=cuda scripts/bench.sh
# The end-to-end numbers (streams served in real time, latency) come from
# scripts/stream-capacity.sh.
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-bench.XXXXXX)
source "$(dirname "$0")/lib.sh"
REPEAT="${REPEAT:-3}" BATCHES="${BATCHES:-30}" STEPS="${STEPS:-20}" DEVICE="${DEVICE:-auto}"
PYTHON="${NOVELSTREAM_PYTHON:-$CACHE/torch-2.11.0-venv/bin/python}"
CLIPS="$CACHE/bench"
mkdir -p "$CLIPS"
# A long H.264 + AAC clip: 60 s of 1280x720 at 25 fps with a tone, made once.
CLIP="$CLIPS/testsrc2-720p25-60s.mp4"
if [ ! -f "$CLIP" ]; then
  ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 60 -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -b:a 128k "$CLIP.tmp.mp4"
  mv "$CLIP.tmp.mp4" "$CLIP"
fi
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), $(date -u +%F)"
for size in 64 112; do
  cat >"$WORK/decode-$size.toml" <<TOML
[decode]
height = $size
width = $size
TOML
  echo
  "$BIN" bench decode "$CLIP" --config "$WORK/decode-$size.toml" --repeat "$REPEAT"
done
bench_model "$DEVICE" >"$WORK/assign.toml"
echo
"$BIN" bench assign --config "$WORK/assign.toml" --batches "$BATCHES"

echo
"$BIN" bench train --config "$WORK/assign.toml" --steps "$STEPS" 2>&1 | grep -v ' INFO '
if [ -x "$PYTHON" ]; then
  device=cpu
  if [ "$DEVICE" != cpu ] && "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then device=cuda; fi
  threads="$("$PYTHON" -c 'import torch; print(torch.get_num_threads())')"
  "$PYTHON" "$ROOT/bench/train_step.py" --device "$device" --threads "$threads" --steps "$STEPS"
  # The binary links TCMalloc; PyTorch with the same allocator, for a like-for-like comparison.
  tcmalloc=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
  if [ -f "$tcmalloc" ]; then
    echo "PyTorch again with TCMalloc preloaded:"
    LD_PRELOAD="$tcmalloc" "$PYTHON" "$ROOT/bench/train_step.py" --device "$device" --threads "$threads" --steps "$STEPS"
  fi
else
  echo "no PyTorch at $PYTHON: the PyTorch comparison is skipped (NOVELSTREAM_TORCH=cuda make setup installs it)"
fi
