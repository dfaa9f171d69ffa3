#!/usr/bin/env bash
# Runs `novelstream eval` for several seeds with the same arguments and prints a markdown row of
# mean ± std over the seeds (novel ACC, NMI, ARI, known accuracy, baselines, train time).
#   scripts/eval-seeds.sh NAME "0 1 2" [eval arguments...]
# Results go to results/NAME/seed-S.json (+ predictions-S.csv); a seed whose results.json is
# already there is not run again (FORCE=1 reruns it).
#   DATASET  data set (default data/mnist; e.g. data/av-digits for the audio-visual clips)
#   NOVELSTREAM_BIN  the binary (default target/release/novelstream)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
name=$1 seeds=$2
shift 2
out="$ROOT/results/$name"
bin="${NOVELSTREAM_BIN:-$ROOT/target/release/novelstream}"
mkdir -p "$out"
for seed in $seeds; do
  if [ -f "$out/seed-$seed.json" ] && [ -z "${FORCE:-}" ]; then
    echo "results/$name/seed-$seed.json exists; not running it again" >&2
    continue
  fi
  "$bin" eval --dataset "${DATASET:-$ROOT/data/mnist}" --seed "$seed" \
    --out "$out/seed-$seed.json" --predictions "$out/predictions-$seed.csv" "$@" >&2
done
python3 - "$name" "$out" $seeds <<'PY'
import json, statistics, sys
name, out, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.load(open(f"{out}/seed-{s}.json")) for s in seeds]
def cell(values, pct=True):
    scale = 100 if pct else 1
    m = statistics.mean(values) * scale
    sd = (statistics.stdev(values) * scale) if len(values) > 1 else 0.0
    return f"{m:.1f} ± {sd:.1f}" if pct else f"{m:.3f} ± {sd:.3f}"
m = lambda k: [r["method"]["novel"][k] for r in runs]
print(f"| {name} | {cell(m('accuracy'))} | {cell(m('nmi'), False)} | {cell(m('ari'), False)} "
      f"| {cell([r['method']['known_accuracy'] for r in runs])} "
      f"| {cell([r['baselines']['kmeans_raw_pixels']['accuracy'] for r in runs])} "
      f"| {cell([r['baselines']['kmeans_supervised_features']['accuracy'] for r in runs])} "
      f"| {statistics.mean(r['method']['train_seconds'] for r in runs):.0f} |")
PY
