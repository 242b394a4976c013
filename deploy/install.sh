#!/usr/bin/env bash
# Installs edge-pose as a systemd service on Raspberry Pi OS or Debian (12 "bookworm" or later).
#
#   sudo deploy/install.sh [--config FILE] [--prefix DIR] [--no-start]
#
# What it does, in order (re-running it upgrades in place):
#   1. apt: python3, python3-venv, mosquitto-clients; on a Raspberry Pi also python3-picamera2
#      (picamera2 only works from the Pi's apt, see README "Pi camera");
#   2. a venv in PREFIX/venv made with --system-site-packages (so picamera2 is importable);
#   3. pip install --require-hashes -r requirements-device.lock (runtime + MQTT, no dev tools),
#      then this checkout (models included);
#   4. /etc/edge-pose/config.toml from --config or deploy/config.example.toml (kept if present;
#      device_id set to the host name), validated; an empty /etc/edge-pose/mqtt_password (0600)
#      for systemd's LoadCredential= when there is none;
#   5. the unit to /etc/systemd/system/edge-pose.service; enable and (re)start.
set -euo pipefail

PREFIX=/opt/edge-pose
CONFIG_SRC=""
START=1
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "install.sh: $*" >&2; exit 1; }
log() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG_SRC=${2:?--config needs a file}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

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
if grep -qs "Raspberry Pi" /proc/device-tree/model; then is_pi=1; fi

log "apt packages"
packages=(python3 python3-venv python3-pip ca-certificates mosquitto-clients)
[ "$is_pi" -eq 1 ] && packages+=(python3-picamera2)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"

log "venv in $PREFIX/venv"
install -d -m 0755 "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  python3 -m venv --system-site-packages "$PREFIX/venv"
fi
pip=("$PREFIX/venv/bin/python" -m pip --disable-pip-version-check -q)
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
if [ ! -e /etc/edge-pose/mqtt_password ]; then
  install -m 0600 /dev/null /etc/edge-pose/mqtt_password
fi

log "systemd unit"
unit=/etc/systemd/system/edge-pose.service
sed "s#/opt/edge-pose/venv/bin/edge-pose#$PREFIX/venv/bin/edge-pose#" \
  "$SRC/systemd/edge-pose.service" > "$unit.tmp"
chmod 0644 "$unit.tmp"
mv "$unit.tmp" "$unit"
systemctl daemon-reload
systemctl enable edge-pose.service
if [ "$START" -eq 1 ]; then
  systemctl restart edge-pose.service
  systemctl --no-pager --lines=5 status edge-pose.service || true
fi
log "done: journalctl -u edge-pose -f   to follow it"
