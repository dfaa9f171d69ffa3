#!/usr/bin/env bash
# The README's picture of the demo: a screenshot of the report `make demo` wrote, taken in
# headless Chromium (installed by `make setup`). Run it after `make demo` whenever the report
# changes, and commit the picture.
#   scripts/screenshot.sh [REPORT] [PNG]   (default: results/demo/report.html docs/demo-report.png)
#   env: WIDTH=1100 HEIGHT=1500
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-screenshot.XXXXXX)
source "$(dirname "$0")/lib.sh"
REPORT="$(readlink -f "${1:-$ROOT/results/demo/report.html}")"
PNG="${2:-$ROOT/docs/demo-report.png}"
[ -f "$REPORT" ] || { echo "no report at $REPORT: run make demo first" >&2; exit 1; }
mkdir -p "$(dirname "$PNG")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000 \
  --user-data-dir="$WORK/profile" --window-size="${WIDTH:-1100},${HEIGHT:-1500}" \
  --screenshot="$WORK/shot.png" "file://$REPORT" 2>"$WORK/chromium.log" ||
  { cat "$WORK/chromium.log" >&2; exit 1; }
[ -s "$WORK/shot.png" ] || { echo "chromium wrote no screenshot" >&2; cat "$WORK/chromium.log" >&2; exit 1; }
mv "$WORK/shot.png" "$PNG"
echo "wrote $PNG from $REPORT"
