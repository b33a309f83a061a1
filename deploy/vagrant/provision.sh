#!/usr/bin/env bash
# Provisions one VM: installs the shoal binary and the systemd unit a real
# installation uses (deploy/systemd/shoal.service), imports busybox as
# busybox:local (the VMs reach no registry), and the first manager
# initialises the swarm; form-swarm.sh joins the others.
set -euo pipefail
name="$1" role="$2" addr="$3" first="$4"

install -m 0755 /shoal/target/release/shoal /usr/local/bin/shoal
install -m 0644 /shoal/deploy/systemd/shoal.service /etc/systemd/system/shoal.service
# Metrics on the VM's own address: deploy/prometheus/vagrant.yml scrapes them.
echo "SHOAL_DAEMON_OPTS=\"--node-name ${name} --metrics-addr ${addr}:9323\"" > /etc/default/shoal
systemctl daemon-reload
systemctl enable --now shoal.service
for _ in $(seq 100); do [ -S /run/shoal/shoal.sock ] && break; sleep 0.2; done

if ! shoal image ls | grep -q "busybox.*local"; then
  rootfs=$(mktemp -d)
  mkdir -p "$rootfs/bin" "$rootfs/usr/bin"
  cp /bin/busybox "$rootfs/usr/bin/"
  # Links to the path busybox has inside the image (`busybox --install -s`
  # would point them at this VM's temporary directory).
  for applet in $(/bin/busybox --list); do ln -s /usr/bin/busybox "$rootfs/bin/$applet"; done
  tar -C "$rootfs" -cf /tmp/busybox.tar .
  shoal image import /tmp/busybox.tar busybox:local
  rm -rf "$rootfs" /tmp/busybox.tar
fi

if [ "$addr" = "$first" ] && ! shoal info --format json | grep -q '"swarm": "active"'; then
  shoal swarm init --advertise-addr "$addr"
fi
