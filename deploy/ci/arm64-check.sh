#!/usr/bin/env bash
# The device install and the pipeline on arm64, on an x86 machine: a Debian bookworm arm64 root
# run through qemu-user (binfmt_misc), deploy/install.sh --no-start in it, `edge-pose models
# verify`, the pipeline on a few frames of the demo clip compared with this machine's (raw model
# outputs and annotations, within the tolerances of deploy/ci/arch_compare.py), and the fast
# unit tests. Fails loudly (exit 1, with the reason) when anything is missing or breaks: it
# never skips.
#
#   sudo deploy/ci/arm64-check.sh [--cache DIR] [--rebuild] [--keep]
#
#   --cache DIR  where the arm64 root and pip's downloads are kept between runs
#                (default /var/cache/edge-pose-ci; built from nothing when empty)
#   --rebuild    build the root again even when a cached one exists
#   --keep       keep the run's folder (the arm64 side's outputs) for a look afterwards
#
# Needs root, debootstrap and qemu-user-static (apt), and a kernel with binfmt_misc. A run leaves
# nothing mounted and no binfmt entry it added, on every exit path. Timings and the agreement
# figures are printed and written to out/arm64-check.json. On a real Pi (no emulation): see
# deploy/README.md, "Checking a Pi" (make pi-check).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=/var/cache/edge-pose-ci
REBUILD=0
KEEP=0
SUITE=bookworm
# The root has what install.sh's apt step installs, so that step only confirms it (a run then
# spends its time on install.sh's own work, not on emulated dpkg).
INCLUDE=python3,python3-venv,python3-pip,ca-certificates,mosquitto-clients,systemd
# The unit tests run on arm64: the pure math (smoothing, tracking, the lifter with its int8
# model), config validation and the Pi-specific code. Not the video-heavy ones (decoding the
# demo clip is ~30x slower emulated: test_detect and test_pose2d alone took over 6 min), nor
# the broker ones; the detector and landmark models are compared with x86 above instead.
TESTS=(tests/test_smooth.py tests/test_track.py tests/test_lift3d.py tests/test_config.py
       tests/test_pi.py)
# Which packages of requirements.lock the tests need beyond the device lock.
TEST_PACKAGES=(pytest pluggy iniconfig packaging pygments)
# A Pi 5's CPU as /proc/cpuinfo shows it: bookworm's qemu 7.2 passes the host's x86 cpuinfo
# through, and the runtime's CPU detection then crashes (SIGSEGV). QEMU_CPU makes qemu emulate
# the same core (Cortex-A76, with the dot-product instructions XNNPACK's int8 kernels use).
CPUINFO='processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

Revision	: d04170
Serial		: 0000000000000000
Model		: Raspberry Pi 5 Model B Rev 1.0
'

die() { echo "arm64-check: FAILED: $*" >&2; exit 1; }
log() { echo "==> [arm64-check $(date -u +%H:%M:%S)] $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE=${2:?--cache needs a folder}; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

CACHE=$(realpath -m -- "$CACHE")
[ "$(id -u)" -eq 0 ] || die "run as root: it mounts file systems and registers binfmt_misc"
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
QEMU=/usr/bin/qemu-aarch64-static
[ -x "$QEMU" ] || die "$QEMU missing (apt-get install qemu-user-static)"
[ -x "$REPO/.venv/bin/edge-pose" ] || die "$REPO/.venv missing: run make setup first (the x86 side)"

T0=$(date +%s)
declare -A TIMES=()
lap() { TIMES[$1]=$(( $(date +%s) - ${2} )); }

# ---- cleanup, on every exit path -------------------------------------------------------------
MOUNTS=()          # mount points to unmount, in reverse order
BINFMT_ADDED=0
BINFMT_MOUNTED=0
WORK=""
cleanup() {
  local rc=$? i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    mountpoint -q "${MOUNTS[i]}" || continue
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null ||
      echo "arm64-check: could not unmount ${MOUNTS[i]}" >&2
  done
  if [ "$BINFMT_ADDED" -eq 1 ] && [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 || echo "arm64-check: binfmt entry left" >&2
  fi
  if [ "$BINFMT_MOUNTED" -eq 1 ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" -eq 1 ]; then echo "arm64-check: kept $WORK" >&2
    elif grep -qs " ${WORK}[/ ]" /proc/mounts; then echo "arm64-check: $WORK still mounted" >&2
    else rm -rf -- "$WORK"; fi
  fi
  if [ "$rc" -ne 0 ]; then echo "arm64-check: FAILED (exit $rc) after $(( $(date +%s) - T0 )) s" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mnt() {  # mnt TARGET MOUNT-ARGS...: mount, and remember to unmount
  local target=$1 real; shift
  # Never through a symlink out of the root (debootstrap's first stage makes proc a link to the
  # host's /proc): a mount there would land on the host.
  real=$(realpath -m -- "$target")
  case "$real" in
    "$CACHE"/?*) ;;
    *) die "refusing to mount on $target: it resolves to $real, outside $CACHE" ;;
  esac
  mount "$@" "$target" || die "mount $* $target failed"
  MOUNTS+=("$target")
}

# ---- binfmt_misc: run aarch64 programs through qemu ------------------------------------------
BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
  mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null ||
    die "cannot mount binfmt_misc at $BINFMT (the kernel lacks it, or this container may not \
mount it: run the check on a VM or a host, or on a real Pi)"
  BINFMT_MOUNTED=1
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -r "$conf" ] || die "$conf missing (apt-get install qemu-user-static)"
  # Flag F opens the interpreter now, so it works inside the chroot without a copy there.
  line=$(sed -n '/^:qemu-aarch64:/p' "$conf")
  case "$line" in *:*F*) ;; *) line="${line}F" ;; esac
  echo "$line" > "$BINFMT/register" 2>/dev/null ||
    die "cannot register qemu-aarch64 in $BINFMT/register (read-only binfmt_misc?)"
  BINFMT_ADDED=1
fi
grep -qx enabled "$BINFMT/qemu-aarch64" || die "binfmt entry qemu-aarch64 is disabled"
interp=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
binfmt_fixed=0
grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" && binfmt_fixed=1

in_root() {  # in_root ROOT CMD...: run CMD in the arm64 root, clean environment
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU=cortex-a76 "$@"
}

prepare_root() {  # mounts and files a chroot needs; everything mounted is unmounted at exit
  local root=$1
  if [ "$binfmt_fixed" -eq 0 ]; then
    install -D -m 0755 "$QEMU" "$root$interp"
  fi
  if [ -L "$root/proc" ]; then rm -f -- "$root/proc"; mkdir "$root/proc"; fi
  mnt "$root/proc" -t proc proc
  printf '%s' "$CPUINFO" > "$WORK/cpuinfo"
  mnt "$root/proc/cpuinfo" --bind "$WORK/cpuinfo"
  mnt "$root/sys" --bind /sys
  mnt "$root/dev" --bind /dev
  mnt "$root/dev/pts" --bind /dev/pts
  # The device tree of a Pi 5, as far as install.sh looks (the model string).
  mnt "$root/sys/firmware" -t tmpfs tmpfs
  mkdir -p "$root/sys/firmware/devicetree/base"
  printf 'Raspberry Pi 5 Model B Rev 1.0\0' > "$root/sys/firmware/devicetree/base/model"
}

network_files() {  # what pip and apt in the root need to reach the registries from here
  local root=$1
  install -m 0644 /etc/resolv.conf "$root/etc/resolv.conf"
  # This machine's CA bundle: a TLS-intercepting proxy's CA is in it where there is one.
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/run.XXXXXX")

# ---- the arm64 root, cached --------------------------------------------------------------------
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
         grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' \
  /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
key=$(printf '%s %s %s v1' "$SUITE" "$INCLUDE" "$mirror" | sha256sum | cut -c1-12)
BASE="$CACHE/arm64-$SUITE-$key"
t=$(date +%s)
if [ "$REBUILD" -eq 1 ] || [ ! -e "$BASE/.complete" ]; then
  log "building the arm64 $SUITE root in $BASE (from $mirror; first stage, then second \
stage emulated: ~5-7 min)"
  rm -rf -- "$BASE" "$BASE.tmp"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$INCLUDE" \
    "$SUITE" "$BASE.tmp" "$mirror" > "$WORK/debootstrap1.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap1.log" >&2; cp "$WORK/debootstrap1.log" "$CACHE/";
      die "debootstrap (first stage) failed (log: $CACHE/debootstrap1.log)"; }
  (
    # debootstrap's second stage unmounts what it finds mounted on its way out: unmount only
    # what is still mounted, and never let the unmounting decide the exit status.
    MOUNTS=()
    trap 'for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
            if mountpoint -q "${MOUNTS[i]}"; then
              umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true
            fi
          done' EXIT
    prepare_root "$BASE.tmp"
    in_root "$BASE.tmp" /debootstrap/debootstrap --second-stage > "$WORK/debootstrap2.log" 2>&1 ||
      { tail -n 20 "$WORK/debootstrap2.log" >&2; exit 1; }
  ) || { cp "$WORK/debootstrap2.log" "$CACHE/" 2>/dev/null || true;
         die "debootstrap (second stage, emulated) failed (log: $CACHE/debootstrap2.log)"; }
  in_root "$BASE.tmp" apt-get clean
  touch "$BASE.tmp/.complete"
  mv "$BASE.tmp" "$BASE"
  lap root_build "$t"
else
  log "reusing the arm64 root $BASE"
  TIMES[root_build]=0
fi

# ---- a throwaway copy of it: overlayfs on the cached root ----------------------------------
ROOT="$WORK/root"
mkdir -p "$WORK/upper" "$WORK/ovl" "$ROOT"
mnt "$ROOT" -t overlay overlay -o "lowerdir=$BASE,upperdir=$WORK/upper,workdir=$WORK/ovl"
prepare_root "$ROOT"
network_files "$ROOT"
mkdir -p "$CACHE/pip-arm64" "$ROOT/root/.cache/pip"
mnt "$ROOT/root/.cache/pip" --bind "$CACHE/pip-arm64"
in_root "$ROOT" uname -m | grep -qx aarch64 || die "the root does not run as aarch64"

# The checkout as CI has it (tracked and new files, not .venv or outputs).
mkdir -p "$ROOT/root/edge-pose"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
     tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT/root/edge-pose"
else
  tar -C "$REPO" --exclude=./.venv --exclude=./out --exclude=./cache -cf - . |
    tar -xf - -C "$ROOT/root/edge-pose"
fi

# A board whose pip is set to another index (as Raspberry Pi OS sets one): install.sh must not
# use it. With no-index honoured, the pinned install would fail.
printf '[global]\nno-index = true\nextra-index-url = file:///nonexistent/simple\n' \
  > "$ROOT/etc/pip.conf"

# ---- install.sh --no-start ---------------------------------------------------------------------
log "deploy/install.sh --no-start on arm64"
t=$(date +%s)
in_root "$ROOT" bash /root/edge-pose/deploy/install.sh --no-start > "$WORK/install.log" 2>&1 ||
  { tail -n 30 "$WORK/install.log" >&2; die "install.sh failed on arm64"; }
lap install "$t"
grep -q "python3-picamera2 is not offered by apt" "$WORK/install.log" ||
  die "install.sh did not report the missing python3-picamera2 on a Pi without the Pi repository"
[ -L "$ROOT/etc/systemd/system/multi-user.target.wants/edge-pose.service" ] ||
  die "install.sh did not enable the unit"
VPY=/opt/edge-pose/venv/bin/python
in_root "$ROOT" "$VPY" -c 'import platform, simplejpeg, numpy
assert platform.machine() == "aarch64", platform.machine()
assert "/opt/edge-pose/venv/" in simplejpeg.__file__, simplejpeg.__file__
img = (numpy.arange(64 * 48 * 3) % 251).astype(numpy.uint8).reshape(48, 64, 3)
out = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(img, quality=95))
assert out.shape == img.shape, out.shape
print("simplejpeg", simplejpeg.__version__, "from the venv with numpy", numpy.__version__)' ||
  die "the venv's simplejpeg does not work with its numpy (picamera2 would not import)"

log "edge-pose models verify"
t=$(date +%s)
in_root "$ROOT" /opt/edge-pose/venv/bin/edge-pose models verify || die "models verify failed"
lap verify "$t"

# ---- the pipeline on both sides, compared --------------------------------------------------
log "pipeline and raw model outputs: x86 reference"
t=$(date +%s)
AC="$WORK/compare"
mkdir -p "$AC"
X86PY="$REPO/.venv/bin/python"
COMPARE="$REPO/deploy/ci/arch_compare.py"
"$X86PY" "$COMPARE" clip "$REPO/edge/assets/sports2d_demo.mp4" "$AC/clip.mkv"
"$REPO/.venv/bin/edge-pose" run --source "$AC/clip.mkv" --every-frame --out "$AC/x86" \
  --no-progress > "$WORK/x86-run.log" 2>&1 || { cat "$WORK/x86-run.log" >&2; die "x86 run failed"; }
"$X86PY" "$COMPARE" inputs "$AC" "$AC/clip.mkv"
"$X86PY" "$COMPARE" outputs "$AC" x86 2>/dev/null
lap x86_reference "$t"

log "pipeline and raw model outputs: arm64"
t=$(date +%s)
cp -r "$AC" "$ROOT/root/compare"
in_root "$ROOT" /opt/edge-pose/venv/bin/edge-pose run --source /root/compare/clip.mkv \
  --every-frame --out /root/compare/arm64 --no-progress > "$WORK/arm64-run.log" 2>&1 ||
  { cat "$WORK/arm64-run.log" >&2; die "the pipeline failed on arm64"; }
in_root "$ROOT" "$VPY" /root/edge-pose/deploy/ci/arch_compare.py outputs /root/compare arm64 \
  2>/dev/null || die "the models failed on arm64"
cp -r "$ROOT/root/compare/arm64" "$ROOT/root/compare/arm64.npz" "$AC/"
lap arm64_pipeline "$t"
agree=0
"$X86PY" "$COMPARE" compare "$AC" || agree=$?

# ---- the fast unit tests on arm64 ----------------------------------------------------------
log "unit tests on arm64: ${TESTS[*]}"
t=$(date +%s)
lockpat=$(printf '%s|' "${TEST_PACKAGES[@]}")
awk -v pat="^(${lockpat%|})==" '
  /^[a-z0-9]/ { keep = ($0 ~ pat) } keep && !/^ *#/ { print }' "$REPO/requirements.lock" \
  > "$ROOT/root/test-requirements.lock"
in_root "$ROOT" env PIP_CONFIG_FILE=/dev/null "$VPY" -m pip install -q \
  --disable-pip-version-check --cert /etc/ssl/certs/ca-certificates.crt --require-hashes \
  --no-deps -r /root/test-requirements.lock > "$WORK/pytest-install.log" 2>&1 ||
  { cat "$WORK/pytest-install.log" >&2; die "installing pytest in the arm64 venv failed"; }
tests_rc=0
in_root "$ROOT" sh -c "cd /root/edge-pose && $VPY -m pytest -q -p no:cacheprovider ${TESTS[*]}" \
  > "$WORK/pytest.log" 2>&1 || tests_rc=$?
tail -n 15 "$WORK/pytest.log"
lap unit_tests "$t"
passed=$(tail -n 1 "$WORK/pytest.log" | grep -Eo '[0-9]+ passed' | cut -d' ' -f1 || true)

total=$(( $(date +%s) - T0 ))
mkdir -p "$REPO/out"
{
  printf '{"total_s": %d, "root_cached": %s, "unit_tests_passed": %s, "times_s": {' "$total" \
    "$([ "${TIMES[root_build]}" -eq 0 ] && echo true || echo false)" "${passed:-0}"
  sep=""
  for k in root_build install verify x86_reference arm64_pipeline unit_tests; do
    printf '%s"%s": %d' "$sep" "$k" "${TIMES[$k]}"; sep=", "
  done
  printf '}, "agreement": '
  cat "$AC/agreement.json"
  printf '}\n'
} > "$REPO/out/arm64-check.json"
log "times (s): $(for k in root_build install verify x86_reference arm64_pipeline unit_tests; do
  printf '%s=%s ' "$k" "${TIMES[$k]}"; done) total=$total"
[ "$agree" -eq 0 ] || die "arm64 and x86 disagree beyond the tolerances (see above)"
[ "$tests_rc" -eq 0 ] || die "unit tests failed on arm64 (see above)"
log "arm64 check passed in $total s"
