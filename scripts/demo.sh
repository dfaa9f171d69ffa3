#!/usr/bin/env bash
# The local demo: a tansu broker on 127.0.0.1, a few synthetic camera streams (ffmpeg lavfi
# sources, H.264 + AAC), the daemon assigning every window, and a summary of what it published.
# Everything started here is stopped on exit.
set -euo pipefail
WORK=$(mktemp -d /tmp/novelstream-demo.XXXXXX)
source "$(dirname "$0")/lib.sh"
PORT=$(free_port) MPORT=$(free_port)
BROKERS="127.0.0.1:$PORT"
say() { printf '\n== %s\n' "$*"; }

say "starting tansu on $BROKERS"
start_tansu "$PORT"

say "making clips: 3 camera streams x 3 segments of 2 s (25 fps, 320x240, H.264 + AAC)"
mkdir -p "$WORK/clips"/{lobby,garden,server-room}
clip() {  # clip OUT LAVFI_VIDEO_SOURCE SECONDS FREQ
  ffmpeg -loglevel error -y -f lavfi -i "$2" \
    -f lavfi -i "sine=frequency=$4:sample_rate=44100" \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -t "$3" "$1"
}
for i in 0 1 2; do
  clip "$WORK/clips/lobby/$i.ts" "testsrc=size=320x240:rate=25" 2 440
  clip "$WORK/clips/garden/$i.ts" "mandelbrot=size=320x240:rate=25:start_scale=$((3 + i))" 2 660
  clip "$WORK/clips/server-room/$i.ts" "life=size=320x240:rate=25:mold=10:ratio=0.$((3 + i))" 2 880
done
head -c 40000 /dev/urandom >"$WORK/clips/corrupt.ts"

cat >"$WORK/demo.toml" <<TOML
[kafka]
brokers = "$BROKERS"
topic_partitions = 2
topic_replication_factor = 1
[source]
file_roots = ["$WORK/clips"]
[decode]
window = "1s"
hop = "500ms"
frames = 4
height = 64
width = 64
[model]
known_classes = ["test-pattern"]
novel_clusters = 4
[metrics]
listen = "127.0.0.1:$MPORT"
TOML

say "starting the daemon (stops by itself after 3 minutes at the latest)"
"$BIN" run --config "$WORK/demo.toml" --run-for 180s >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
daemon=$!
started $daemon

say "producing segments: the lobby stream inline and labelled, the others as file:// references"
"$BIN" produce --brokers "$BROKERS" --stream-id lobby --label test-pattern --inline "$WORK/clips/lobby" >/dev/null
"$BIN" produce --brokers "$BROKERS" --stream-id garden "$WORK/clips/garden" >/dev/null
"$BIN" produce --brokers "$BROKERS" --stream-id server-room "$WORK/clips/server-room" >/dev/null
"$BIN" produce --brokers "$BROKERS" --stream-id server-room --inline "$WORK/clips/corrupt.ts" >/dev/null

say "assignments published (9 segments x 3 windows expected, plus 1 dead letter)"
"$BIN" summary --brokers "$BROKERS" --expect 27 --timeout 150s

say "a few of the daemon's metrics (http://127.0.0.1:$MPORT/metrics)"
curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -E '^novelstream_(windows_published_total|dead_letters_total|model_version|decode_seconds_count) ' || true

say "stopping the daemon (SIGTERM drains in-flight work)"
kill -TERM "$daemon"
wait "$daemon"
cat "$WORK/daemon.out"
