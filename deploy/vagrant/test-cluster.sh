#!/usr/bin/env bash
# The whole-cluster check, run by hand (too long for CI): brings up 3
# manager and 2 worker VMs with up.sh (building the box if needed), checks
# that the 5-replica service runs on several VMs, halts the leader's VM and
# times a write through the `vagrant` context (it must succeed within 2 s),
# brings the VM back and sees it rejoin, then tears everything down with
# down.sh and checks that no VM, libvirt network, volume or qemu process is
# left.   deploy/vagrant/test-cluster.sh   (as root; ~25 min without KVM)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shoal() { "$here/../../target/release/shoal" --context vagrant "$@"; }
fail() { echo "test-cluster.sh: FAIL: $*" >&2; exit 1; }
cd "$here"
# SHOAL_KEEP=1 leaves the VMs up after a failure, for a look inside.
[ "${SHOAL_KEEP:-}" = 1 ] || trap './down.sh >/dev/null 2>&1 || true' EXIT

begun=$(date +%s)
./up.sh
echo "up and formed in $(( $(date +%s) - begun )) s"

nodes_running() { shoal service ps demo | awk '/ Running +Running/ { for (i = 1; i <= NF; i++) if ($i ~ /^(manager|worker)[0-9]+$/) print $i }' | sort -u; }
for _ in $(seq 120); do [ "$(nodes_running | wc -l)" -ge 3 ] && break; sleep 1; done
spread=$(nodes_running | wc -l)
[ "$spread" -ge 3 ] || fail "the 5 replicas run on $spread VM(s), not spread over the VMs"
echo "PASS: demo's 5 replicas run on $spread VMs: $(nodes_running | tr '\n' ' ')"

leader=$(shoal node ls | awk '/Leader/ { for (i = 1; i <= NF; i++) if ($i ~ /^manager[0-9]+$/) print $i }')
[ -n "$leader" ] || fail "no manager is shown as Leader in node ls"
echo "halting the leader's VM: $leader"
vagrant halt "$leader"
write_started=$(date +%s%N)
shoal service scale --detach demo=6
took_ms=$(( ($(date +%s%N) - write_started) / 1000000 ))
[ "$took_ms" -le 2000 ] || fail "the write through the context took $took_ms ms with $leader down (limit 2000 ms)"
echo "PASS: with $leader halted a write through the context succeeded in $took_ms ms"

vagrant up "$leader"
for _ in $(seq 180); do
  shoal node ls | grep -E "\b$leader\b" | grep -q ' Ready ' && break
  sleep 1
done
shoal node ls | grep -E "\b$leader\b" | grep -q ' Ready ' || fail "$leader did not come back Ready"
echo "PASS: $leader is back and Ready"

trap - EXIT
./down.sh
left=""
virsh -c qemu:///system list --all --name | grep -q 'vagrant_' && left+=" domains"
virsh -c qemu:///system net-list --all --name | grep -q 'shoal-vagrant' && left+=" networks"
virsh -c qemu:///system vol-list default | grep -qE 'vagrant_(manager|worker)' && left+=" volumes"
pgrep -f 'qemu-system.*vagrant_' >/dev/null && left+=" qemu-processes"
[ -z "$left" ] || fail "down.sh left:$left"
echo "PASS: nothing left (the box stays cached; ./down.sh --box removes it)"
echo "total $(( $(date +%s) - begun )) s"
