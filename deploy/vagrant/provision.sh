#!/usr/bin/env bash
# Provisions one VM: installs the shoal binary and a systemd unit for the
# daemon; the first manager also initialises the swarm.
set -euo pipefail
name="$1" role="$2" addr="$3" first="$4"

install -m 0755 /shoal/target/release/shoal /usr/local/bin/shoal
cat > /etc/systemd/system/shoal.service <<UNIT
[Unit]
Description=Shoal node
After=network-online.target

[Service]
ExecStart=/usr/local/bin/shoal daemon --node-name ${name}
Restart=always
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now shoal.service
for _ in $(seq 50); do [ -S /run/shoal/shoal.sock ] && break; sleep 0.2; done

# Only the first manager creates the swarm here; form-swarm.sh (run on the
# host after `vagrant up`) joins the others with tokens it reads from it.
if [ "$addr" = "$first" ] && ! shoal info --format json | grep -q '"swarm": "active"'; then
  shoal swarm init --advertise-addr "$addr"
fi
