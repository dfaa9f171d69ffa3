#!/usr/bin/env bash
# Prints a markdown table row (mean ± std over the seeds present) for each results/NAME given:
#   scripts/results-table.sh NAME...
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python3 "$ROOT/scripts/results_table.py" names "$ROOT/results" "$@"
