#!/usr/bin/env bash
# One command for a real 3+2 VM cluster: builds the release binary and the
# box (cached), starts libvirt if needed, brings the VMs up, forms the
# swarm, writes a client bundle and a `vagrant` context for the host's
# shoal, runs a 5-replica service across the VMs and shows `service ps`.
#   deploy/vagrant/up.sh            (from anywhere, as root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
started=$(date +%s)

[ -e /dev/kvm ] || { echo "up.sh: /dev/kvm is missing; these VMs need KVM (enable virtualisation, or load kvm_intel/kvm_amd)" >&2; exit 1; }
for tool in vagrant virsh qemu-system-x86_64 debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "up.sh: $tool is missing; install: apt-get install vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86 debootstrap" >&2
    exit 1
  }
done
# Without systemd as PID 1 (a container), start libvirt's daemons by hand.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  virtlogd -d 2>/dev/null || true
  libvirtd -d
  for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
fi

(cd "$repo" && cargo build --release -q)
"$here/build-box.sh"
box_dir="${SHOAL_BOX_DIR:-/var/cache/shoal-vagrant}"
vagrant box list | grep -q '^shoal/bookworm-local ' || vagrant box add --name shoal/bookworm-local "$box_dir/shoal-bookworm.box"

cd "$here"
vagrant up --provider libvirt
./form-swarm.sh
formed=$(date +%s)

bundle="$here/.bundle"
vagrant ssh manager1 -c "sudo shoal swarm client-bundle --out /tmp/bundle && sudo tar -C /tmp/bundle -cf - ." > "$here/.bundle.tar"
mkdir -p "$bundle" && tar -C "$bundle" -xf "$here/.bundle.tar" && rm "$here/.bundle.tar"
shoal context rm vagrant >/dev/null 2>&1 || true
shoal context create vagrant --from-bundle "$bundle" --description "deploy/vagrant VMs"
shoal --context vagrant service rm demo >/dev/null 2>&1 || true
shoal --context vagrant service create --name demo --replicas 5 busybox:local sh -c 'trap "exit 0" TERM; while true; do sleep 1; done'
shoal --context vagrant service ps demo
echo "cluster formed in $((formed - started)) s; use it with: shoal --context vagrant node ls (or: shoal context use vagrant)"
