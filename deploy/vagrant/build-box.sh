#!/usr/bin/env bash
# Builds the Vagrant box the VMs boot, offline from Debian's packages (no
# box download): debootstrap bookworm into an ext4 image with a kernel, an
# ssh server, rsync, sudo and the vagrant user with Vagrant's public
# insecure key, converted to qcow2 and packaged as a libvirt box. The VMs
# boot its kernel directly (no bootloader in the image).
#
# Cached: a second run with the box already built does nothing. Remove it
# with `./down.sh --box` or by deleting $SHOAL_BOX_DIR.
#
# Needs root, debootstrap, qemu-utils (qemu-img), e2fsprogs, and loop devices.
set -euo pipefail
cd "$(dirname "$0")"

BOX_DIR="${SHOAL_BOX_DIR:-/var/cache/shoal-vagrant}"
BOX="$BOX_DIR/shoal-bookworm.box"
MIRROR="${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SIZE_MB=2048

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "build-box.sh: $tool is missing; install it with: apt-get install debootstrap qemu-utils e2fsprogs" >&2
      exit 1
    }
  done
}

if [ -f "$BOX" ] && [ -f "$BOX_DIR/vmlinuz" ] && [ -f "$BOX_DIR/initrd.img" ]; then
  echo "box already built: $BOX"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-box.sh: run it as root (debootstrap and mount need it)" >&2; exit 1; }
need debootstrap qemu-img mkfs.ext4 losetup tar

work="$(mktemp -d /var/tmp/shoal-box.XXXXXX)"
mnt="$work/root"
cleanup() {
  for m in dev/pts dev proc sys; do umount "$mnt/$m" 2>/dev/null || true; done
  umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$mnt" "$BOX_DIR"
truncate -s "${SIZE_MB}M" "$work/root.img"
mkfs.ext4 -q -L root "$work/root.img"
mount -o loop "$work/root.img" "$mnt"

debootstrap --variant=minbase \
  --include=linux-image-amd64,systemd-sysv,busybox-static,libseccomp2,udev,openssh-server,rsync,sudo,iproute2,ifupdown,isc-dhcp-client,ca-certificates,kmod,procps,nftables \
  bookworm "$mnt" "$MIRROR"

mount --bind /dev "$mnt/dev"; mount --bind /dev/pts "$mnt/dev/pts"
mount -t proc proc "$mnt/proc"; mount -t sysfs sys "$mnt/sys"
in_root() { chroot "$mnt" /usr/bin/env DEBIAN_FRONTEND=noninteractive "$@"; }

echo "vagrant-box" > "$mnt/etc/hostname"
cat > "$mnt/etc/fstab" <<'EOF'
LABEL=root / ext4 defaults,errors=remount-ro 0 1
EOF
# The first interface is Vagrant's management network (DHCP from libvirt);
# the kernel is booted with net.ifnames=0, so it is eth0.
cat > "$mnt/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback
auto eth0
iface eth0 inet dhcp
EOF
in_root useradd -m -s /bin/bash vagrant
echo "vagrant:vagrant" | in_root chpasswd
echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$mnt/etc/sudoers.d/vagrant"
chmod 0440 "$mnt/etc/sudoers.d/vagrant"
install -d -m 0700 -o 1000 -g 1000 "$mnt/home/vagrant/.ssh"
# Vagrant's well-known insecure key; `vagrant up` replaces it with a fresh one.
cp "$(dirname "$(readlink -f "$(command -v vagrant)")")/../lib/ruby/vendor_ruby/vagrant/keys/vagrant.pub" \
   "$mnt/home/vagrant/.ssh/authorized_keys" 2>/dev/null \
  || cp /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub "$mnt/home/vagrant/.ssh/authorized_keys" 2>/dev/null \
  || find / -path '*vagrant*/keys/vagrant.pub' -print -quit 2>/dev/null | xargs -I{} cp {} "$mnt/home/vagrant/.ssh/authorized_keys"
chmod 0600 "$mnt/home/vagrant/.ssh/authorized_keys"
chown 1000:1000 "$mnt/home/vagrant/.ssh/authorized_keys"
echo "UseDNS no" >> "$mnt/etc/ssh/sshd_config"
in_root systemctl enable ssh systemd-networkd-wait-online.service >/dev/null 2>&1 || true
in_root apt-get clean

# The kernel and initrd boot the VM directly; the image has no bootloader.
cp "$mnt"/boot/vmlinuz-* "$BOX_DIR/vmlinuz"
cp "$mnt"/boot/initrd.img-* "$BOX_DIR/initrd.img"
for m in dev/pts dev proc sys; do umount "$mnt/$m"; done
umount "$mnt"

qemu-img convert -O qcow2 "$work/root.img" "$work/box.img"
cat > "$work/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $(( (SIZE_MB + 1023) / 1024 ))}
EOF
cat > "$work/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
  end
end
EOF
tar -C "$work" -czf "$BOX.tmp" metadata.json Vagrantfile box.img
mv "$BOX.tmp" "$BOX"
echo "built $BOX"
