#!/usr/bin/env bash
# Runs `novelstream eval` for several seeds with the same arguments and prints a markdown row of
# mean ± std over the seeds (novel ACC, NMI, ARI, known accuracy, baselines, train time).
#   scripts/eval-seeds.sh NAME "0 1 2" [eval arguments...]
# Results go to results/NAME/seed-S.json (+ predictions-S.csv); a seed whose results.json is
# already there is not run again (FORCE=1 reruns it).
#   DATASET  data set (default data/mnist; e.g. data/av-digits for the audio-visual clips)
#   NOVELSTREAM_BIN  the binary (default target/release/novelstream)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
name=$1 seeds=$2
shift 2
out="$ROOT/results/$name"
mkdir -p "$out"
for seed in $seeds; do
  if [ -f "$out/seed-$seed.json" ] && [ -z "${FORCE:-}" ]; then
    echo "results/$name/seed-$seed.json exists; not running it again" >&2
    continue
  fi
  "$BIN" eval --dataset "${DATASET:-$ROOT/data/mnist}" --seed "$seed" \
    --out "$out/seed-$seed.json" --predictions "$out/predictions-$seed.csv" "$@" >&2
done
python3 "$ROOT/scripts/results_table.py" seeds "$name" "$out" $seeds
