#!/usr/bin/env bash
# Joins every VM but manager1 to manager1's swarm, reading the join tokens
# from manager1 over `vagrant ssh`. Safe to re-run: nodes already in the
# swarm are skipped.
set -euo pipefail
cd "$(dirname "$0")"
managers="${SHOAL_MANAGERS:-3}" workers="${SHOAL_WORKERS:-2}" subnet="198.18.10"
worker_token=$(vagrant ssh manager1 -c 'sudo shoal swarm join-token -q worker' | tr -d '\r')
manager_token=$(vagrant ssh manager1 -c 'sudo shoal swarm join-token -q manager' | tr -d '\r')
index=1
join() {
  local host="$1" token="$2" addr="$subnet.$((10 + $3))"
  if vagrant ssh "$host" -c 'sudo shoal info --format json' | grep -q '"swarm": "active"'; then
    echo "$host is already in the swarm"
  else
    vagrant ssh "$host" -c "sudo shoal swarm join --token $token --advertise-addr $addr $subnet.11:4242"
  fi
}
for i in $(seq 2 "$managers"); do join "manager$i" "$manager_token" "$i"; done
for i in $(seq 1 "$workers"); do join "worker$i" "$worker_token" "$((managers + i))"; done
vagrant ssh manager1 -c 'sudo shoal node ls'
