#!/usr/bin/env bash
# The model `make demo` starts from, trained once by `make setup`: the demo's configuration
# (config/av-digits.toml with config/demo.toml over it) trained offline on the av-digits training
# clips of the known digits 0-4 only — half of them labelled, the other half unlabelled, no clip
# of 5-9 and no test clip (`novelstream eval --known-only`). Discovering 5-9 is left to the
# stream. Kept in $CACHE/demo/ under a key of the configs and the model and training code, so a
# change to any of them trains it again.
#   scripts/demo-model.sh          trains it unless it is there (about STEPS / 100 minutes on 2 cores)
#   scripts/demo-model.sh --path   prints where it is (or would be)
#   env: STEPS=800 SEED=0
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-demo-model.XXXXXX)
source "$(dirname "$0")/lib.sh"
STEPS="${STEPS:-800}" SEED="${SEED:-0}"
key=$( (cd "$ROOT" && echo "$STEPS $SEED" && cat config/av-digits.toml config/demo.toml &&
  find src/model src/train src/eval src/config -name '*.rs' | sort | xargs cat) | sha256sum | cut -c1-16)
DIR="$CACHE/demo/$key"
if [ "${1:-}" = --path ]; then
  echo "$DIR/known-only.ckpt"
  exit 0
fi
[ -f "$DIR/known-only.ckpt" ] && exit 0
require_av_digits
[ -x "$BIN" ] || { echo "no $BIN: build it first (make build)" >&2; exit 1; }
echo "[setup] training the demo's starting model on the known digits 0-4 only ($STEPS steps, about $((STEPS / 100 + 1)) min): $DIR" >&2
demo_config "$WORK/demo.toml" </dev/null
mkdir -p "$DIR"
"$BIN" eval --dataset "$SET" --known 0-4 --novel 5-9 --known-only --labelled-fraction 0.5 \
  -c "$WORK/demo.toml" --steps "$STEPS" --seed "$SEED" --save-checkpoint "$WORK/known-only.ckpt" \
  --out "$DIR/known-only-eval.json" --predictions "$WORK/predictions.csv" 2>"$DIR/train.log"
mv "$WORK/known-only.ckpt" "$DIR/known-only.ckpt"
