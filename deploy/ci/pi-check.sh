#!/usr/bin/env bash
# The arm64 check on a real Raspberry Pi (or any arm64 board), where no emulation is needed.
#
#   On an x86 machine with this checkout set up (make setup):
#     deploy/ci/pi-check.sh --reference DIR     # the x86 side: clip, inputs, outputs, annotations
#   Copy DIR to the Pi; there, in this checkout:
#     sudo deploy/install.sh --no-start           # (or an installed, running device)
#     deploy/ci/pi-check.sh DIR                   # the Pi side, compared with the x86 one
#
# The Pi side runs `edge-pose models verify`, the pipeline on the clip and every int8 model on
# the same inputs with the installed venv (PREFIX/venv, default /opt/edge-pose), then compares
# within the tolerances of deploy/ci/arch_compare.py (exit 1 beyond them). The unit tests run
# on the Pi with `make test` in this checkout.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPARE="$REPO/deploy/ci/arch_compare.py"
PREFIX=${PREFIX:-/opt/edge-pose}
die() { echo "pi-check: FAILED: $*" >&2; exit 1; }

case "${1:-}" in
  --reference)
    dir=${2:?--reference needs a folder}
    [ -x "$REPO/.venv/bin/edge-pose" ] || die "run make setup first"
    mkdir -p "$dir"
    "$REPO/.venv/bin/python" "$COMPARE" clip "$REPO/edge/assets/sports2d_demo.mp4" "$dir/clip.mkv"
    "$REPO/.venv/bin/edge-pose" run --source "$dir/clip.mkv" --every-frame --out "$dir/x86" \
      --no-progress > /dev/null
    "$REPO/.venv/bin/python" "$COMPARE" inputs "$dir" "$dir/clip.mkv"
    "$REPO/.venv/bin/python" "$COMPARE" outputs "$dir" x86
    echo "pi-check: x86 reference in $dir; copy it to the Pi and run deploy/ci/pi-check.sh DIR"
    ;;
  ""|-h|--help) sed -n '2,14p' "$0" ;;
  *)
    dir=$1
    [ "$(uname -m)" = aarch64 ] || die "run this side on the arm64 board (this is $(uname -m))"
    [ -f "$dir/x86.npz" ] || die "$dir/x86.npz missing: make it with --reference on x86"
    [ -x "$PREFIX/venv/bin/edge-pose" ] || die "$PREFIX/venv missing: sudo deploy/install.sh"
    "$PREFIX/venv/bin/edge-pose" models verify
    rm -rf "$dir/arm64"
    "$PREFIX/venv/bin/edge-pose" run --source "$dir/clip.mkv" --every-frame --out "$dir/arm64" \
      --no-progress > /dev/null || die "the pipeline failed"
    "$PREFIX/venv/bin/python" "$COMPARE" outputs "$dir" arm64 || die "the models failed"
    "$PREFIX/venv/bin/python" "$COMPARE" compare "$dir" || die "x86 and this board disagree"
    echo "pi-check: passed (figures in $dir/agreement.json)"
    ;;
esac
