#!/usr/bin/env bash
# Builds here what scripts/gpu-run.sh needs on a GPU machine that has only PyTorch (issue 22):
# the daemon built against the CUDA libtorch, a minimal FFmpeg 5.1 of the SONAMEs it links
# (Debian 12's are 240 MB with their dependencies), TCMalloc and OpenSSL 3, tansu, the ffmpeg
# CLI for `bench decode`, and a few hundred 25 fps 112x112 av-digits clips. libtorch itself is
# not bundled: the GPU machine's torch/lib (torch 2.11.0+cu130) is used there.
#   scripts/gpu-bundle.sh [BUNDLE]   (default BUNDLE: gpu-bundle, ignored by git)
#   env: CLIPS_PER_CLASS=20 (train clips per digit) JOBS=$(nproc)
# Writes BUNDLE/novelstream-gpu.tar.xz and BUNDLE/CONTENTS.txt; run it there with
#   scripts/gpu-run.sh BUNDLE OUT     (device tool: carry ["gpu-bundle"])
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BUNDLE="$(mkdir -p "${1:-$ROOT/gpu-bundle}" && cd "${1:-$ROOT/gpu-bundle}" && pwd)"
CLIPS_PER_CLASS="${CLIPS_PER_CLASS:-20}" JOBS="${JOBS:-$(nproc)}"
BUILD="$ROOT/target/gpu-bundle"
STAGE="$BUILD/stage/novelstream-gpu"
# The Debian 12 (security) release of FFmpeg 5.1: the same sources as the libraries the binary
# is linked against here, so the same ABI and symbol versions (LIBAVCODEC_59, ...).
FFMPEG_VERSION=5.1.9
FFMPEG_URL="http://deb.debian.org/debian-security/pool/updates/main/f/ffmpeg/ffmpeg_$FFMPEG_VERSION.orig.tar.xz"
FFMPEG_SHA256=d9b593bb2ba93d4b50f74177e0cdcd41747e708596367deed0c30348a71dd176
# What the daemon reads (crates/input: mp4, mpegts, matroska; the clips are H.264 + AAC, other
# common codecs so other clips decode too), and what `bench decode`'s ffmpeg CLI writes.
FFMPEG_CONFIGURE=(
  --disable-everything --disable-autodetect --enable-zlib --disable-doc --disable-static
  --enable-shared --disable-postproc --disable-network --disable-programs --enable-ffmpeg
  --enable-demuxer=mov,mpegts,matroska
  --enable-decoder=h264,hevc,mpeg4,mpeg2video,vp8,vp9,aac,mp3,mp3float,mp2,ac3,opus,vorbis,flac,pcm_s16le,pcm_f32le
  --enable-parser=h264,hevc,mpeg4video,mpegvideo,vp8,vp9,aac,mpegaudio,ac3,opus,vorbis,flac
  --enable-protocol=file,pipe
  --enable-encoder=rawvideo,pcm_f32le --enable-muxer=rawvideo,pcm_f32le,null
  --enable-filter=scale,aresample,format,aformat,null,anull
)
step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%T)"; }
mkdir -p "$BUILD"
export LIBTORCH="${LIBTORCH:-$(readlink -f "$CACHE/libtorch")}"
[ -f "$LIBTORCH/lib/libtorch_cuda.so" ] ||
  { echo "$LIBTORCH is not a CUDA libtorch: NOVELSTREAM_TORCH=cuda make setup installs one" >&2; exit 1; }

step "the daemon (cargo build --release --locked, LIBTORCH=$LIBTORCH)"
(cd "$ROOT" && cargo build --release --locked)

step "FFmpeg $FFMPEG_VERSION, minimal, shared"
flags_id=$(printf '%s\n' "$FFMPEG_VERSION" "${FFMPEG_CONFIGURE[@]}" | sha256sum | cut -c1-12)
FFMPEG="$BUILD/ffmpeg/$flags_id"
if [ ! -f "$FFMPEG/.complete" ]; then
  tarball="$BUILD/ffmpeg_$FFMPEG_VERSION.orig.tar.xz"
  [ -f "$tarball" ] || curl -sSfL -o "$tarball" "$FFMPEG_URL"
  echo "$FFMPEG_SHA256  $tarball" | sha256sum -c --quiet
  # FFmpeg's x86 assembly needs nasm; without it the H.264 decoder is several times slower.
  if ! command -v nasm >/dev/null; then
    [ -x "$BUILD/nasm/usr/bin/nasm" ] ||
      (cd "$BUILD" && apt-get download nasm 2>/dev/null && dpkg -x nasm_*.deb nasm && rm nasm_*.deb)
    export PATH="$BUILD/nasm/usr/bin:$PATH"
  fi
  rm -rf "$BUILD/ffmpeg" "$BUILD/ffmpeg-src"
  mkdir -p "$BUILD/ffmpeg-src"
  tar -xJf "$tarball" -C "$BUILD/ffmpeg-src" --strip-components 1
  (cd "$BUILD/ffmpeg-src" && ./configure --prefix="$FFMPEG" "${FFMPEG_CONFIGURE[@]}" >"$BUILD/ffmpeg-configure.log" &&
    make -j"$JOBS" >"$BUILD/ffmpeg-make.log" 2>&1 && make install >>"$BUILD/ffmpeg-make.log" 2>&1)
  rm -rf "$BUILD/ffmpeg-src"
  touch "$FFMPEG/.complete"
fi

step "clips: av-digits at 112x112, 25 fps, 2 s, $CLIPS_PER_CLASS train clips per digit"
CLIPS="$BUILD/clips-112x25-$CLIPS_PER_CLASS"
if [ ! -f "$CLIPS/.complete" ]; then
  rm -rf "$CLIPS"
  "$BIN" dataset av-digits --mnist "$ROOT/data/mnist" --speech "$ROOT/data/spoken-digits" --out "$CLIPS" \
    --size 112 --fps 25 --clip 2s --train-per-class "$CLIPS_PER_CLASS" --test-per-class 1
  touch "$CLIPS/.complete"
fi
# One 60 s clip of 30 of them, stream-copied, for `bench decode` (throughput without the
# per-segment open) next to a single 2 s clip (with it).
LONG="$BUILD/av-digits-112x25-60s.mp4"
if [ ! -f "$LONG" ]; then
  python3 - "$CLIPS" >"$BUILD/concat.txt" <<'PY'
import json, sys
clips = [c for c in json.load(open(sys.argv[1] + "/manifest.json"))["clips"] if c["split"] == "train"][:30]
for c in clips:
    print(f"file '{sys.argv[1]}/{c['path']}'")
PY
  ffmpeg -v error -y -f concat -safe 0 -i "$BUILD/concat.txt" -c copy -movflags +faststart "$LONG.tmp.mp4"
  mv "$LONG.tmp.mp4" "$LONG"
fi

step "staging $STAGE"
rm -rf "$BUILD/stage"
mkdir -p "$STAGE/libexec" "$STAGE/lib" "$STAGE/bench"
strip -o "$STAGE/libexec/novelstream" "$BIN"
strip -o "$STAGE/libexec/tansu" "$(readlink -f "$TANSU")"
strip -o "$STAGE/libexec/ffmpeg" "$FFMPEG/bin/ffmpeg"
for lib in avutil avcodec avformat avdevice avfilter swscale swresample; do
  real=$(readlink -f "$FFMPEG/lib/lib$lib.so")
  soname=$(readelf -d "$real" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
  strip --strip-unneeded -o "$STAGE/lib/$soname" "$real"
done
# TCMalloc (the binary links it; not on a stock Ubuntu) and OpenSSL 3 (librdkafka's; Ubuntu 24.04
# has it, an older image may not), as resolved here.
for soname in libtcmalloc_minimal.so.4 libssl.so.3 libcrypto.so.3; do
  cp -L "$(ldd "$BIN" | awk -v s="$soname" '$1 == s {print $3}')" "$STAGE/lib/$soname"
done
cp -r "$CLIPS" "$STAGE/clips"
rm -f "$STAGE/clips/.complete"
cp "$LONG" "$STAGE/bench/"
first=$(python3 -c "import json, sys; print([c['path'] for c in json.load(open(sys.argv[1]))['clips'] if c['split'] == 'train'][0])" "$CLIPS/manifest.json")
cp "$CLIPS/$first" "$STAGE/bench/av-digits-112x25-2s.mp4"
{
  echo "novelstream $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src crates Cargo.lock || echo ' (with uncommitted changes)'), built $(date -u +%FT%TZ)"
  # `make setup` names the folder after the version: libtorch-2.11.0/torch.
  echo "linked against libtorch $(basename "$(dirname "$LIBTORCH")" | sed 's/^libtorch-//') (CUDA build): $LIBTORCH"
  echo "FFmpeg $FFMPEG_VERSION configured with: ${FFMPEG_CONFIGURE[*]}"
  echo "tansu: $("$TANSU" --version 2>/dev/null || readlink -f "$TANSU")"
} >"$STAGE/BUILD-INFO"

step "checking the staged binaries resolve every library and symbol from the bundle and the system"
check_libs() {  # FILE...: prints what each needs from outside the bundle, fails on anything missing
  local out
  out=$(env -i LD_LIBRARY_PATH="$STAGE/lib:$LIBTORCH/lib" ldd -r "$@" 2>&1)
  if grep -E 'not found|undefined symbol' <<<"$out"; then
    echo "unresolved libraries or symbols (above)" >&2
    exit 1
  fi
  grep -E '=> /' <<<"$out" | grep -v "$STAGE/lib" | grep -v "$LIBTORCH" | awk '{print $1}' | sort -u | tr '\n' ' '
  echo
}
echo "novelstream needs beside the bundle and libtorch: $(check_libs "$STAGE/libexec/novelstream")"
echo "the FFmpeg libraries and the CLI need: $(check_libs "$STAGE"/lib/libav* "$STAGE"/lib/libsw* "$STAGE/libexec/ffmpeg")"
echo "tansu needs: $(check_libs "$STAGE/libexec/tansu")"
ffmpeg_libs=$(env -i LD_LIBRARY_PATH="$STAGE/lib:$LIBTORCH/lib" ldd "$STAGE/libexec/novelstream" | grep -E 'lib(av|sw)')
if grep -v "$STAGE/lib" <<<"$ffmpeg_libs"; then
  echo "the FFmpeg libraries above do not resolve to the bundle's" >&2
  exit 1
fi

step "packing"
rm -f "$BUNDLE/novelstream-gpu.tar.xz"
tar -C "$BUILD/stage" -cf - novelstream-gpu | xz -T"$JOBS" -9 >"$BUNDLE/novelstream-gpu.tar.xz"
{
  cat "$STAGE/BUILD-INFO"
  echo
  echo "unpacked: $(du -sh "$STAGE" | cut -f1); packed: $(du -h "$BUNDLE/novelstream-gpu.tar.xz" | cut -f1)"
  (cd "$STAGE" && du -sh libexec/* lib bench clips | sed 's/^/  /')
  echo "clips: $(python3 -c "import json, sys; c = json.load(open(sys.argv[1]))['clips']; print(len(c), 'of which train', sum(x['split'] == 'train' for x in c))" "$STAGE/clips/manifest.json")"
} >"$BUNDLE/CONTENTS.txt"
cat "$BUNDLE/CONTENTS.txt"
size=$(stat -c %s "$BUNDLE/novelstream-gpu.tar.xz")
# The device tool carries at most 64 MiB, the working tree included.
if [ "$size" -gt $((56 * 1024 * 1024)) ]; then
  echo "the bundle is $((size / 1048576)) MiB: over the 56 MiB that leaves room for the working tree" >&2
  exit 1
fi
