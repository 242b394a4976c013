#!/usr/bin/env bash
# Installs edge-pose as a systemd service on Raspberry Pi OS or Debian (12 "bookworm" or later),
# 64-bit only (aarch64 or x86_64).
#
#   sudo deploy/install.sh [--config FILE] [--prefix DIR] [--no-start] [--fuse]
#
# What it does, in order (re-running it is safe and upgrades in place):
#   1. refuses a 32-bit or other unsupported system up front (no runtime wheel exists for it);
#   2. apt: python3, python3-venv, mosquitto-clients; on a Raspberry Pi also python3-picamera2
#      when the Raspberry Pi repository offers it (without it, USB cameras still work);
#   3. a venv in PREFIX/venv made with --system-site-packages (so picamera2 is importable),
#      remade when the system's Python changed under it (a distribution upgrade);
#   4. pip install --require-hashes -r requirements-device.lock (runtime + MQTT, no dev tools),
#      ignoring any pip index configured on the board, then this checkout (models included);
#   5. /etc/edge-pose/config.toml from --config or deploy/config.example.toml (kept if present;
#      device_id set to the host name), validated; an empty /etc/edge-pose/mqtt_password and
#      /etc/edge-pose/http_token (0600) for systemd's LoadCredential= when there are none. The state (event journal, in
#      /var/lib/private/edge-pose) is never touched;
#   6. the unit to /etc/systemd/system/edge-pose.service; enable and (re)start (where systemd
#      runs: in a chroot or image build the unit is installed and enabled only);
#   7. with --fuse (a host that fuses several devices' poses, `edge-pose fuse`): the unit
#      edge-pose-fuse.service and /etc/edge-pose/fuse.toml from deploy/fuse.example.toml (kept
#      if present); enabled and started only once that config validates (it names the scene's
#      calibration file, which only you can provide).
set -euo pipefail

PREFIX=/opt/edge-pose
CONFIG_SRC=""
START=1
FUSE=0
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG_SRC=${2:?--config needs a file}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --no-start) START=0; shift ;;
    --fuse) FUSE=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# The runtime (ai-edge-litert) has wheels for 64-bit x86 and ARM only: say so now, not after a
# long pip run that ends in "no matching distribution". dpkg's architecture is the userland's,
# which is what counts (a 64-bit kernel can run a 32-bit Raspberry Pi OS).
machine=$(uname -m)
arch=$(dpkg --print-architecture 2>/dev/null || echo "$machine")
case "$arch" in
  arm64|amd64) ;;
  armhf|armel|armv7l|armv6l|i386)
    die "unsupported architecture $arch (kernel $machine): edge-pose needs a 64-bit system \
(arm64 or amd64) because its TFLite runtime has no 32-bit wheels. On a Raspberry Pi 3, 4 or 5, \
install Raspberry Pi OS (64-bit)." ;;
  *) die "unsupported architecture $arch (kernel $machine): edge-pose runs on arm64 and amd64" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
[ -r /etc/os-release ] || die "/etc/os-release missing: not Debian or Raspberry Pi OS"
# shellcheck disable=SC1091
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" raspbian "*) ;;
  *) die "unsupported OS ${PRETTY_NAME:-unknown}: Debian or Raspberry Pi OS only" ;;
esac
command -v systemctl >/dev/null || die "systemd is required"

is_pi=0
if grep -qs "Raspberry Pi" /proc/device-tree/model /sys/firmware/devicetree/base/model; then
  is_pi=1
fi

log "apt packages"
packages=(python3 python3-venv python3-pip ca-certificates mosquitto-clients)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if [ "$is_pi" -eq 1 ]; then
  # Only the Raspberry Pi repository has it; plain Debian or Ubuntu on a Pi does not.
  if apt-cache policy python3-picamera2 2>/dev/null | grep -q "Candidate: [0-9]"; then
    packages+=(python3-picamera2)
  else
    echo "install.sh: python3-picamera2 is not offered by apt (no Raspberry Pi repository):" \
      "source = \"picamera2\" will not work, USB cameras (source = \"0\") will" >&2
  fi
fi
apt-get install -y -q --no-install-recommends "${packages[@]}"

log "venv in $PREFIX/venv"
install -d -m 0755 "$PREFIX"
venv_py="$PREFIX/venv/bin/python"
sys_ver=$(python3 -c 'import sys; print(sys.version_info[:2])')
if [ -x "$venv_py" ] && [ "$("$venv_py" -c 'import sys; print(sys.version_info[:2])' \
     2>/dev/null)" != "$sys_ver" ]; then
  log "the system Python changed under the venv: making it again"
  rm -rf -- "$PREFIX/venv"
fi
if [ ! -x "$venv_py" ]; then
  python3 -m venv --system-site-packages "$PREFIX/venv"
fi
# The lock pins every file by sha256, so only the default index is used: an extra index set on
# the board (Raspberry Pi OS sets one in /etc/pip.conf) would offer other builds of the same
# versions, which fail the hash check. PIP_CONFIG_FILE=/dev/null makes pip read no config file;
# the index variables are dropped too. The system's CA bundle is passed explicitly, so a proxy
# CA added with update-ca-certificates still works.
pip=(env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_NO_INDEX
     PIP_CONFIG_FILE=/dev/null "$venv_py" -m pip --disable-pip-version-check -q)
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  pip+=(--cert /etc/ssl/certs/ca-certificates.crt)
fi
"${pip[@]}" install --require-hashes -r "$SRC/requirements-device.lock"
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$SRC"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
"$PREFIX/venv/bin/edge-pose" models verify >/dev/null || die "the installed models do not verify"

log "config in /etc/edge-pose"
install -d -m 0755 /etc/edge-pose
if [ -n "$CONFIG_SRC" ]; then
  install -m 0644 "$CONFIG_SRC" /etc/edge-pose/config.toml
elif [ ! -e /etc/edge-pose/config.toml ]; then
  device_id=$(hostname -s | tr -c 'A-Za-z0-9_.\n-' '_')
  sed "s/^device_id = .*/device_id = \"$device_id\"/" "$SRC/deploy/config.example.toml" \
    > /etc/edge-pose/config.toml
  chmod 0644 /etc/edge-pose/config.toml
fi
"$PREFIX/venv/bin/edge-pose" validate-config /etc/edge-pose/config.toml
for cred in mqtt_password http_token; do
  if [ ! -e "/etc/edge-pose/$cred" ]; then
    install -m 0600 /dev/null "/etc/edge-pose/$cred"
  fi
done

log "systemd unit"
unit=/etc/systemd/system/edge-pose.service
sed "s#/opt/edge-pose/venv/bin/edge-pose#$PREFIX/venv/bin/edge-pose#" \
  "$SRC/systemd/edge-pose.service" > "$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable edge-pose.service
  if [ "$START" -eq 1 ]; then
    systemctl restart edge-pose.service
    systemctl --no-pager --lines=5 status edge-pose.service || true
  fi
else
  # A chroot or an image being built: enable works offline (it only makes the symlink).
  systemctl enable edge-pose.service
  log "systemd is not running here: the unit starts at the next boot"
fi

if [ "$FUSE" -eq 1 ]; then
  log "fuse worker"
  if [ ! -e /etc/edge-pose/fuse.toml ]; then
    install -m 0644 "$SRC/deploy/fuse.example.toml" /etc/edge-pose/fuse.toml
  fi
  funit=/etc/systemd/system/edge-pose-fuse.service
  sed "s#/opt/edge-pose/venv/bin/edge-pose#$PREFIX/venv/bin/edge-pose#" \
    "$SRC/systemd/edge-pose-fuse.service" > "$funit.tmp"
  chmod 0644 "$funit.tmp"
  mv "$funit.tmp" "$funit"
  if "$PREFIX/venv/bin/edge-pose" fuse --config /etc/edge-pose/fuse.toml --validate; then
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload
      systemctl enable edge-pose-fuse.service
      if [ "$START" -eq 1 ]; then systemctl restart edge-pose-fuse.service; fi
    else
      systemctl enable edge-pose-fuse.service
    fi
  else
    log "edge-pose-fuse.service installed, not enabled: edit /etc/edge-pose/fuse.toml (scene," \
      "devices, calibration), then: systemctl enable --now edge-pose-fuse.service"
  fi
fi
log "done: journalctl -u edge-pose -f   to follow it"
