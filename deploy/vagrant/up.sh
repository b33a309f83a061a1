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

[ -e /dev/kvm ] || [ "${SHOAL_VM_DRIVER:-}" = qemu ] || {
  echo "up.sh: /dev/kvm is missing; enable virtualisation (or load kvm_intel/kvm_amd), or set SHOAL_VM_DRIVER=qemu to emulate the VMs (slow)" >&2
  exit 1
}
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
# The host drives the VMs with the binary they run.
shoal() { "$repo/target/release/shoal" "$@"; }
"$here/build-box.sh"
box_dir="${SHOAL_BOX_DIR:-/var/cache/shoal-vagrant}"
vagrant box list | grep -q '^shoal/bookworm-local ' || vagrant box add --name shoal/bookworm-local "$box_dir/shoal-bookworm.box"

# Some hosts expose a /dev/kvm that cannot run a stock kernel (a nested or
# paravirtual KVM such as kvm_pvm: the box's kernel never gets past its
# decompressor). Boot the box's kernel alone for a few seconds: a working KVM
# prints its banner at once; otherwise fall back to QEMU's TCG emulation.
if [ -z "${SHOAL_VM_DRIVER:-}" ]; then
  probe_log="$(mktemp)"
  timeout 10 qemu-system-x86_64 -enable-kvm -cpu kvm64 -m 256 -display none -monitor none -no-reboot \
    -serial "file:$probe_log" -kernel "$box_dir/vmlinuz" -append "console=ttyS0 panic=-1" >/dev/null 2>&1 || true
  if grep -aq 'Linux version' "$probe_log"; then
    export SHOAL_VM_DRIVER=kvm
  else
    echo "up.sh: this host's KVM cannot boot the box's kernel (no output in 10 s); using QEMU emulation (TCG), which is slower; set SHOAL_VM_DRIVER=kvm to force KVM" >&2
    export SHOAL_VM_DRIVER=qemu
  fi
  rm -f "$probe_log"
fi

cd "$here"
vagrant up --provider libvirt
./form-swarm.sh
formed=$(date +%s)

bundle="$here/.bundle"
# Through base64: `vagrant ssh` output may carry carriage returns and
# messages that would corrupt a binary stream.
rm -rf "$bundle" && mkdir -p "$bundle"
vagrant ssh manager1 -c "sudo shoal swarm client-bundle --out /tmp/bundle >/dev/null && sudo tar -C /tmp/bundle -czf - . | base64 -w0" \
  | tr -d '\r' | base64 -d | tar -C "$bundle" -xzf -
shoal context rm vagrant >/dev/null 2>&1 || true
shoal context create vagrant --from-bundle "$bundle" --description "deploy/vagrant VMs"
shoal --context vagrant service rm demo >/dev/null 2>&1 || true
shoal --context vagrant service create --name demo --replicas 5 busybox:local sh -c 'trap "exit 0" TERM; while true; do sleep 1; done'
shoal --context vagrant service ps demo
echo "cluster formed in $((formed - started)) s; use it with: shoal --context vagrant node ls (or: shoal context use vagrant)"
