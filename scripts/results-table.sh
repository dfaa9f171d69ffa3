#!/usr/bin/env bash
# Prints a markdown table row (mean ± std over the seeds present) for each results/NAME given:
#   scripts/results-table.sh NAME...
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
python3 - "$ROOT/results" "$@" <<'PY'
import glob, json, statistics, sys
root, names = sys.argv[1], sys.argv[2:]
def cell(values, pct=True):
    scale = 100 if pct else 1
    m = statistics.mean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.1f} ± {sd:.1f}" if pct else f"{m:.3f} ± {sd:.3f}"
for name in names:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{root}/{name}/seed-*.json"))]
    if not runs:
        continue
    m = lambda k: [r["method"]["novel"][k] for r in runs]
    print(f"| {name} | {len(runs)} | {cell(m('accuracy'))} | {cell(m('nmi'), False)} | {cell(m('ari'), False)} "
          f"| {cell([r['method']['known_accuracy'] for r in runs])} "
          f"| {cell([r['method']['kmeans_on_features']['accuracy'] for r in runs])} "
          f"| {cell([r['baselines']['kmeans_raw_pixels']['accuracy'] for r in runs])} "
          f"| {cell([r['baselines']['kmeans_supervised_features']['accuracy'] for r in runs])} |")
PY
