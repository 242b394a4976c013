#!/usr/bin/env bash
# Removes the edge-pose service installed by install.sh.
#
#   sudo deploy/uninstall.sh [--prefix DIR] [--purge]
#
# Keeps /etc/edge-pose (config, password) and the state (queued events) unless --purge.
set -euo pipefail

PREFIX=/opt/edge-pose
PURGE=0
die() { echo "uninstall.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"

# The device's unit and, when install.sh --fuse put it there, the fuse worker's.
for name in edge-pose edge-pose-fuse; do
  unit=/etc/systemd/system/$name.service
  [ -e "$unit" ] || continue
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$name.service" || true
  else  # a chroot or an image being built: nothing runs, the link is removed offline
    systemctl disable "$name.service" || true
  fi
  rm -f "$unit"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl reset-failed "$name.service" 2>/dev/null || true
  fi
done
case "$PREFIX" in
  /|/usr|/usr/*|/etc|/var|"") die "refusing to remove prefix '$PREFIX'" ;;
esac
rm -rf -- "$PREFIX"
if [ "$PURGE" -eq 1 ]; then
  rm -rf -- /etc/edge-pose /var/lib/edge-pose /var/lib/private/edge-pose \
    /var/lib/private/edge-pose-fuse
  echo "removed edge-pose, its config and its state"
else
  echo "removed edge-pose; kept /etc/edge-pose and /var/lib/private/edge-pose (--purge removes them)"
fi
