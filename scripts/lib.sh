# Shared by the demo and the experiment scripts: source it after setting WORK (a scratch folder).
# Everything started with `started PID` is stopped, and WORK removed, when the script exits.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${NOVELSTREAM_BIN:-$ROOT/target/release/novelstream}"
CACHE="${NOVELSTREAM_CACHE:-$HOME/.cache/novelstream}"
TANSU="${NOVELSTREAM_TANSU:-$CACHE/tansu-0.6.0/bin/tansu}"
pids=()
started() { pids+=("$1"); }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

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
