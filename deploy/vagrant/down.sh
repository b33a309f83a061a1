#!/usr/bin/env bash
# Removes the VMs, their libvirt networks and volumes, and the context;
# with --box also the built box and its cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
vagrant destroy -f || true
for net in shoal-vagrant shoal-vagrant-mgmt; do
  virsh -c qemu:///system net-destroy "$net" >/dev/null 2>&1 || true
  virsh -c qemu:///system net-undefine "$net" >/dev/null 2>&1 || true
done
for vol in $(virsh -c qemu:///system vol-list default 2>/dev/null | awk '/vagrant_(manager|worker)/ {print $1}'); do
  virsh -c qemu:///system vol-delete --pool default "$vol" >/dev/null 2>&1 || true
done
shoal="$here/../../target/release/shoal"; [ -x "$shoal" ] || shoal=shoal
"$shoal" context rm vagrant >/dev/null 2>&1 || true
rm -rf "$here/.bundle" "$here/.vagrant"
if [ "${1:-}" = "--box" ]; then
  vagrant box remove -f shoal/bookworm-local >/dev/null 2>&1 || true
  for vol in $(virsh -c qemu:///system vol-list default 2>/dev/null | awk '/shoal-VAGRANTSLASH-bookworm-local/ {print $1}'); do
    virsh -c qemu:///system vol-delete --pool default "$vol" >/dev/null 2>&1 || true
  done
  rm -rf "${SHOAL_BOX_DIR:-/var/cache/shoal-vagrant}"
fi
echo "removed"
