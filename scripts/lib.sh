# Shared by every script but setup.sh: source it, after setting WORK (a scratch folder) when the
# script needs one. Everything started with `started PID` is stopped, and WORK removed, when the
# script exits.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${NOVELSTREAM_BIN:-$ROOT/target/release/novelstream}"
CACHE="${NOVELSTREAM_CACHE:-$HOME/.cache/novelstream}"
# `make setup` links $CACHE/tansu to the version it built (the version is written only there).
TANSU="${NOVELSTREAM_TANSU:-$CACHE/tansu/bin/tansu}"
pids=()
started() { pids+=("$1"); }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# free_ports N: N distinct ports nothing listens on now, on one line (held together while picked,
# so they differ): `read -r A B < <(free_ports 2)`. Anything may still bind them before the caller does: fine for these scripts,
# which run alone; the tests let the servers they start pick their own (tests/common).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# require_av_digits: sets SET to the audio-visual digit set `make setup` builds; exits when it is
# missing.
require_av_digits() {
  SET="$ROOT/data/av-digits"
  [ -f "$SET/manifest.json" ] || { echo "no $SET/manifest.json: run make setup" >&2; exit 1; }
}

# train_clips MANIFEST MAX: how many clips of the manifest's train split to stream: all of them,
# at most MAX (a Python expression, e.g. "30 * 60 * 2").
train_clips() {
  python3 -c "import json, sys; n = sum(c['split'] == 'train' for c in json.load(open(sys.argv[1]))['clips']); print(min(n, int($2)))" "$1"
}

# bench_model DEVICE: the [model] section the benchmarks share (BENCHMARKS.md): digits 0-4
# known, five novel clusters, both modalities, on DEVICE.
bench_model() {
  cat <<TOML
[model]
known_classes = ["0", "1", "2", "3", "4"]
novel_clusters = 5
modality = "both"
device = "$1"
TOML
}

# daemon_config OUT: writes to OUT the daemon config of the av-digits runs: config/av-digits.toml
# with the TOML read from stdin merged over it (a key given there replaces the file's).
daemon_config() {
  python3 "$ROOT/scripts/toml_merge.py" "$ROOT/config/av-digits.toml" - >"$1"
}

# demo_config OUT: the same with config/demo.toml merged over config/av-digits.toml first (the
# demo's daemon, and the model scripts/demo-model.sh trains for it).
demo_config() {
  python3 "$ROOT/scripts/toml_merge.py" "$ROOT/config/av-digits.toml" "$ROOT/config/demo.toml" - >"$1"
}

# start_tansu PORT [ADVERTISED_PORT]: the broker on 127.0.0.1:PORT with in-memory storage,
# telling clients to connect to ADVERTISED_PORT (default PORT; a proxy's port for outage
# experiments), waited for; its pid is in $TANSU_PID.
start_tansu() {
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$1" --advertised-listener-url "tcp://127.0.0.1:${2:-$1}" \
    --storage-engine memory://tansu/ >>"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  started $TANSU_PID
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "tansu did not start on port $1 (see $WORK/tansu.log)" >&2
  return 1
}

# start_daemon CONFIG LOG [RUN_ARGS...]: `novelstream run --config CONFIG RUN_ARGS` in the
# background, its pid in $DAEMON_PID. Its log (stderr) goes to LOG, begun afresh by the script's
# first start and continued by restarts; its stdout is appended to $WORK/daemon.out.
declare -A daemon_logs=()
start_daemon() {
  local config=$1 log=$2
  shift 2
  [ -n "${daemon_logs[$log]:-}" ] || : >"$log"
  daemon_logs[$log]=1
  "$BIN" run --config "$config" "$@" >>"$WORK/daemon.out" 2>>"$log" &
  DAEMON_PID=$!
  started $DAEMON_PID
}

# wait_ready PORT: waits up to 20 s for the daemon's /readyz on 127.0.0.1:PORT (the model is
# loaded and the consumer has partitions); says so when it is not, and goes on, as the daemon
# still takes what is sent once it is.
wait_ready() {
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.2; done
  echo "the daemon is not ready on port $1 after 20 s; going on" >&2
}

# check_complete SCORE_JSON SENT WHAT [exact]: prints whether every one of SENT one-window
# segments was published at least once (with `exact`: exactly once) according to `novelstream
# score`'s report, which reads `read_committed`; fails if not.
check_complete() {
  python3 - "$1" "$2" "$3" "${4:-}" <<'PY'
import json, sys
report, sent, what, exact = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "exact"
complete = report["missing_segments"] == 0 and report["windows_per_segment"] == {"1": sent}
once = report["duplicate_windows"] == 0
ok = complete and (once or not exact)
verdict = "WINDOWS LOST" if not complete else "WINDOWS REPEATED" if not ok else \
    "every window published exactly once" if exact else "every window published"
print(f"{what}, {sent} segments sent: {report['windows']} distinct windows published, "
      f"{report['missing_segments']} segments missing, {report['duplicate_windows']} duplicates "
      f"({'exactly-once' if exact else 'at-least-once redelivery'}) -> {verdict}")
sys.exit(0 if ok else 1)
PY
}
